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
from masklet.cli.review_csv import ReviewLog
from masklet.tracking.signals import FrameSignals

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


def track_video(onnx_dir: Path, video: Path, prompts: list[VideoPrompt], quiet: bool,
                stream: bool, review: ReviewLog | None = None) -> dict[int, np.ndarray]:
    """Label map of every frame, tracked as the torch path tracks: forwards from the
    earliest prompted frame and backwards before it (`OnnxVideoPredictor`), or with
    ``stream`` forwards in bounded memory from frame 0 (`OnnxStreamingTracker`).
    ``review`` collects the review hints (--review-csv)."""
    from tqdm.auto import tqdm

    from masklet.export import label_map_from_masks

    if stream:
        session = _streamed(onnx_dir, video, prompts)
        total, backward_from = session.num_frames, None
        results = _closing(session)

        def signals_of(frame_idx: int) -> dict:
            return session.frame_signals()  # the current frame's
    else:
        predictor = runtime_module("video").OnnxVideoPredictor(onnx_dir)
        clip = predictor.open(str(video))
        for p in prompts:
            _apply_video(clip, p)  # a frame out of range: IndexError, a one-line error
        total = clip.propagation_length()
        # The backward pass starts after the forward pass's last frame.
        backward_from = clip.num_frames - min(p.frame for p in prompts)
        results = clip.propagate()
        signals_of = clip.frame_signals
    labels: dict[int, np.ndarray] = {}
    for step, (frame_idx, obj_ids, logits) in enumerate(
            tqdm(results, total=total, disable=quiet, desc="onnx")):
        masks = np.asarray(logits)[:, 0] > 0
        labels[frame_idx] = label_map_from_masks(dict(zip(obj_ids, masks)))
        if review is not None:
            if step in (0, backward_from):
                review.begin_pass()
            review.add(frame_idx, obj_ids, masks, _signals(signals_of(frame_idx)))
    return dict(sorted(labels.items()))


def _signals(found: dict) -> dict[int, FrameSignals]:
    """The runtime's (object score, IoU) as masklet's signals (no motion filter there)."""
    return {obj_id: FrameSignals(s.object_score, s.iou, None, None) for obj_id, s in found.items()}


def _closing(session):
    with session:
        yield from session


def _streamed(onnx_dir: Path, video: Path, prompts: list[VideoPrompt]):
    """A streaming session with the prompts queued; every prompt is on frame 0 (the CLI
    checks that for --stream)."""
    tracker = runtime_module("tracker").OnnxStreamingTracker(onnx_dir)
    session = tracker.start(str(video))
    hw = (session.video_height, session.video_width)
    for p in prompts:
        _apply(session, p, hw)
    return session


def _apply_video(clip, p: VideoPrompt) -> None:
    """Apply one prompt on its frame (the same rules as the torch CLI path)."""
    if p.mask is not None:
        clip.add_mask(p.frame, p.obj_id, _load_mask(p, (clip.video_height, clip.video_width)))
        return
    # Several prompts for one object on one frame add up, unless a box starts it afresh.
    clip.add_points(p.frame, p.obj_id, p.points or None, p.labels or None, box=p.box,
                    clear_old_points=bool(p.box))


def _load_mask(p: VideoPrompt, hw: tuple[int, int]) -> np.ndarray:
    from masklet.io.images import load_image

    mask = load_image(p.mask)[..., 0] > 0
    if mask.shape != hw:
        raise CliError(f"mask {p.mask} is {mask.shape[1]}x{mask.shape[0]}, the video is "
                       f"{hw[1]}x{hw[0]}")
    return mask


def _apply(session, p: VideoPrompt, hw: tuple[int, int]):
    """Apply one prompt on the streaming session's current frame."""
    if p.mask is not None:
        return session.add_mask(p.obj_id, _load_mask(p, hw))
    return session.add_points(p.obj_id, p.points or None, p.labels or None, box=p.box,
                              clear_old_points=bool(p.box))
