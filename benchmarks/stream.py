"""Streaming vs offline vs the official predictor: speed per frame and peak memory.

speed:  seconds per tracked frame in steady state (after --warmup frames) for the
        reference's offline predictor, masklet's offline VideoPredictor and masklet's
        StreamingTracker; fp32 and bf16 autocast; 1 and 3 objects; same weights.
memory: peak RSS of one child process per run, tracking one object through the real
        bedroom frames looped to 100 / 1,000 / 5,000 frames; masklet streaming next to
        the reference's offline predictor where it fits (--max-ref-frames).

    python benchmarks/stream.py speed --image-size 1024 --frames 14
    python benchmarks/stream.py memory --lengths 100 1000 5000 --image-size 256
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402
from video import CLICKS, DEFAULT_FRAMES, build_pair  # noqa: E402


def looped_frames(folder: Path, count: int, size: tuple[int, int] | None = None):
    """A generator of `count` frames cycling through the folder's JPEGs (decoded lazily)."""
    paths = sorted(folder.glob("*.jpg"))
    for i in range(count):
        yield np.asarray(Image.open(paths[i % len(paths)]).convert("RGB"))


def _autocast(dtype: str):
    if dtype == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_offline(predictor, frames: list, n_obj: int, warmup: int, dtype: str) -> float:
    with torch.inference_mode(), _autocast(dtype):
        state = predictor.init_state(frames)
        for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
            predictor.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
        stamps = [time.perf_counter() for _ in predictor.propagate_in_video(state)]
    return (stamps[-1] - stamps[warmup]) / (len(stamps) - 1 - warmup)


def time_stream(model, frames: list, n_obj: int, warmup: int, dtype: str) -> float:
    from masklet import StreamingTracker

    tracker = StreamingTracker(model, fill_hole_area=0)
    with torch.inference_mode(), _autocast(dtype), tracker.start(frames) as session:
        for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
            session.add_points(obj_id, [[x, y]], [1])
        stamps = [time.perf_counter() for _ in session]
    return (stamps[-1] - stamps[warmup]) / (len(stamps) - 1 - warmup)


def speed(args) -> None:
    frames = list(looped_frames(args.frames_dir, args.frames))
    ref, ours = build_pair(args.preset, args.image_size)
    rows = []
    for dtype in args.dtypes:
        for n in args.objects:
            t_ref = time_offline(ref, frames, n, args.warmup, dtype) if not args.skip_reference \
                else float("nan")
            t_off = time_offline(ours, frames, n, args.warmup, dtype)
            t_str = time_stream(ours.model, frames, n, args.warmup, dtype)
            rows.append([dtype, str(n), f"{t_ref:.3f}", f"{t_off:.3f}", f"{t_str:.3f}",
                         f"{t_ref / t_off:.2f}x", f"{t_ref / t_str:.2f}x"])
    print(f"{args.preset} at {args.image_size}px, {args.frames} frames ({args.warmup} warm-up), "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print_table(["dtype", "objects", "ref offline s", "masklet offline s", "masklet stream s",
                 "ref/offline", "ref/stream"], rows)


def _child(kind: str, length: int, preset: str, image_size: int, folder: Path) -> None:
    """Track one object through `length` looped frames; print peak RSS in MB as JSON."""
    from masklet import StreamingTracker

    ref, ours = build_pair(preset, image_size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():
        if kind == "masklet-stream":
            with StreamingTracker(ours.model, fill_hole_area=0).start(
                    looped_frames(folder, length)) as session:
                session.add_points(1, [list(CLICKS[0])], [1])
                for _ in session:
                    pass
        else:
            state = ref.init_state(str(_looped_folder(folder, length)))
            ref.add_new_points_or_box(state, 0, 1, points=[list(CLICKS[0])], labels=[1])
            for _ in ref.propagate_in_video(state):
                pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "after_build_mb": base}))


def _looped_folder(folder: Path, length: int) -> Path:
    """A temporary JPEG folder of `length` symlinks cycling through `folder` (for the reference)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="looped-"))
    paths = sorted(folder.glob("*.jpg"))
    for i in range(length):
        (out / f"{i:05d}.jpg").symlink_to(paths[i % len(paths)])
    return out


def memory(args) -> None:
    rows = []
    for length in args.lengths:
        kinds = ["masklet-stream"] + (["reference-offline"] if length <= args.max_ref_frames else [])
        for kind in kinds:
            cmd = [sys.executable, __file__, "_child", kind, str(length), args.preset,
                   str(args.image_size), str(args.frames_dir)]
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            rows.append([kind, str(length), f"{result['after_build_mb']:.0f}",
                         f"{result['peak_mb']:.0f}", f"{time.perf_counter() - start:.0f}"])
    print(f"{args.preset} at {args.image_size}px, one object, bedroom frames looped")
    print_table(["run", "frames", "RSS after build MB", "peak RSS MB", "seconds"], rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, length, preset, size, folder = sys.argv[2:7]
        _child(kind, int(length), preset, int(size), Path(folder))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["speed", "memory"])
    p.add_argument("--preset", default="sam2.1_hiera_tiny")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--max-ref-frames", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    speed(args) if args.mode == "speed" else memory(args)


if __name__ == "__main__":
    main()
