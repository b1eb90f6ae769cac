"""`--onnx DIR` for `masklet image` / `masklet video`: run on exported graphs, no model build.

The graphs run in the torch-free `masklet_runtime` package (installed with
``pip install ./runtime``); this module only imports it, checks the options that have no
meaning there, and feeds it the CLI's prompts.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from masklet.cli.common import CliError
from masklet.cli.prompts import VideoPrompt

INSTALL_HINT = "pip install ./runtime (from a masklet checkout)"


def runtime_module(name: str):
    """Import ``masklet_runtime.<name>``, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(f"masklet_runtime.{name}")
    except ImportError as exc:
        raise CliError(f"--onnx needs the masklet-runtime package ({exc}): "
                       f"{INSTALL_HINT}") from None


def reject_options(**given: object) -> None:
    """One-line error for the first option given (truthy) that --onnx cannot honour.

    Keys are option names without dashes, underscores for hyphens (random_weights).
    """
    for name, value in given.items():
        if value:
            flag = "--" + name.replace("_", "-")
            raise CliError(f"{flag} has no meaning with --onnx (the graphs in DIR fix the "
                           "model, its weights and float32 CPU execution); drop one of them")


def model_options_with_onnx(preset, checkpoint, random_weights, device: str, dtype: str) -> None:
    """Refuse --model / --checkpoint / --random-weights / a non-CPU --device / bfloat16."""
    reject_options(model=preset, checkpoint=checkpoint, random_weights=random_weights,
                   device=str(device) not in ("auto", "cpu") and device,
                   dtype=dtype != "float32" and dtype)


def image_predictor(onnx_dir: Path):
    """`OnnxImagePredictor` on DIR (ExportError, a ValueError, is a one-line CLI error)."""
    return runtime_module("image").OnnxImagePredictor(onnx_dir)


def track_video(onnx_dir: Path, video: Path, prompts: list[VideoPrompt],
                quiet: bool) -> dict[int, np.ndarray]:
    """Label map of every frame, tracking forwards with the ONNX streaming tracker.

    Each prompt is applied when its frame is reached (an object shows from its first
    prompted frame on: the streaming tracker does not go backwards in time).
    """
    from tqdm.auto import tqdm

    from masklet.export import label_map_from_masks

    tracker = runtime_module("tracker").OnnxStreamingTracker(onnx_dir)
    by_frame: dict[int, list[VideoPrompt]] = {}
    for p in prompts:
        by_frame.setdefault(p.frame, []).append(p)
    labels: dict[int, np.ndarray] = {}
    with tracker.start(str(video)) as session:
        hw = (session.video_height, session.video_width)
        for p in by_frame.pop(0, []):
            _apply(session, p, hw)
        for frame_idx, obj_ids, logits in tqdm(session, total=session.num_frames,
                                               disable=quiet, desc="onnx"):
            for p in by_frame.pop(frame_idx, []):
                _, obj_ids, logits = _apply(session, p, hw)
            masks = dict(zip(obj_ids, np.asarray(logits)[:, 0] > 0))
            labels[frame_idx] = (label_map_from_masks(masks) if masks
                                 else np.zeros(hw, dtype=np.uint8))
    if by_frame:
        raise CliError(f"prompt on frame {min(by_frame)}, but the video has {len(labels)} frames")
    return labels


def _apply(session, p: VideoPrompt, hw: tuple[int, int]):
    """Apply one prompt on the session's current frame (same rules as the torch CLI path)."""
    if p.mask is not None:
        from masklet.io.images import load_image

        mask = load_image(p.mask)[..., 0] > 0
        if mask.shape != hw:
            raise CliError(f"mask {p.mask} is {mask.shape[1]}x{mask.shape[0]}, the video is "
                           f"{hw[1]}x{hw[0]}")
        return session.add_mask(p.obj_id, mask)
    # Several prompts for one object on one frame add up, unless a box starts it afresh.
    return session.add_points(p.obj_id, p.points or None, p.labels or None, box=p.box,
                              clear_old_points=bool(p.box))
