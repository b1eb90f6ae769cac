"""Seconds per tracked frame: masklet's VideoPredictor next to the official one.

Same random weights in both, the real bedroom frames, 1 and 3 objects, one process.
Frames after the first ``--warmup`` tracked ones are timed (steady state); the ratio is
reference / masklet (above 1: masklet is faster).

    python benchmarks/video.py --frames 12 --objects 1 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import official_config_file, print_table, rel_err  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = REPO.parent / "shared" / "data" / "videos" / "bedroom"
# Clicks on three things in the bedroom video's first frame: girl, boy, pillow.
CLICKS = [(400, 220), (230, 260), (600, 350)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="sam2.1_hiera_tiny")
    p.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--frames", type=int, default=12, help="frames to track")
    p.add_argument("--warmup", type=int, default=2, help="tracked frames not timed")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: autocast on both sides")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def build_pair(preset: str, image_size: int):
    from sam2.build_sam import build_sam2_video_predictor

    from masklet import VideoPredictor, build_model, get_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        ref = build_sam2_video_predictor(official_config_file(preset), None, device="cpu",
                                         hydra_overrides_extra=[f"++model.image_size={image_size}"])
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.02)
    ref.eval()
    ref.fill_hole_area = 0  # CUDA-only in the reference; skipped there on CPU anyway
    model = build_model(get_config(preset).with_image_size(image_size), checkpoint=ref.state_dict())
    return ref, VideoPredictor(model, fill_hole_area=0, progress=False)


def track(predictor, frames_dir: Path, num_objects: int, warmup: int, autocast):
    """(seconds per frame after warm-up, list of mask tensors)."""
    with torch.inference_mode(), autocast():
        state = predictor.init_state(str(frames_dir))
        for obj_id, (x, y) in enumerate(CLICKS[:num_objects], start=1):
            predictor.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
        stamps, masks = [], []
        for _, _, m in predictor.propagate_in_video(state):
            stamps.append(time.perf_counter())
            masks.append(m.float())
    steady = stamps[warmup:]
    return (steady[-1] - steady[0]) / (len(steady) - 1), masks


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.frames_dir.is_dir():
        sys.exit(f"frames folder not found: {args.frames_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.frames):
            os.symlink(args.frames_dir / f"{i:05d}.jpg", Path(tmp) / f"{i:05d}.jpg")
        ref, ours = build_pair(args.preset, args.image_size)
        if args.dtype == "bfloat16":
            def autocast():
                return torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            import contextlib
            autocast = contextlib.nullcontext
        rows = []
        for n in args.objects:
            t_ref, m_ref = track(ref, Path(tmp), n, args.warmup, autocast)
            t_ours, m_ours = track(ours, Path(tmp), n, args.warmup, autocast)
            err = max(rel_err(a, b) for a, b in zip(m_ours, m_ref))
            rows.append([str(n), f"{t_ref:.3f}", f"{t_ours:.3f}", f"{t_ref / t_ours:.2f}x",
                         f"{err:.1e}"])
    print(f"{args.preset} at {args.image_size}px, {args.dtype}, {args.frames} frames "
          f"({args.warmup} warm-up), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print_table(["objects", "reference s/frame", "masklet s/frame", "ratio", "max rel diff"],
                rows)


if __name__ == "__main__":
    main()
