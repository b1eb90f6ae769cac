"""Streaming vs offline vs the official predictor: speed per frame and peak memory.

speed:  seconds per tracked frame in steady state (frames after --warmup) for the
        reference's offline predictor, masklet's offline VideoPredictor and masklet's
        StreamingTracker; fp32 and bf16; 1 and 3 objects; same weights, one process.
        The three run interleaved, frame by frame, so load from other processes falls on
        all of them alike; both process CPU time and wall time are reported, with ratios
        reference / masklet (above 1: masklet is faster). bf16 is masklet's
        ``precision="bf16"`` and the reference under bf16 autocast (its documented way);
        its masks are compared with the same predictor's fp32 masks (mean IoU of the
        foreground, and correlation of the logits).
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
from _common import cpu_line, print_table, rel_err
from video import CLICKS, DEFAULT_FRAMES, build_pair

PRECISION = {"float32": "fp32", "bfloat16": "bf16"}


def looped_frames(folder: Path, count: int, size: tuple[int, int] | None = None):
    """A generator of `count` frames cycling through the folder's JPEGs (decoded lazily)."""
    paths = sorted(folder.glob("*.jpg"))
    for i in range(count):
        yield np.asarray(Image.open(paths[i % len(paths)]).convert("RGB"))


def reference_frames(ref, folder: Path, n_obj: int, dtype: str):
    """The official predictor's masks per frame; bf16 by autocast around its own steps."""
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        state = ref.init_state(str(folder))
        for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
            ref.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
        frames = ref.propagate_in_video(state)
    while True:
        with torch.inference_mode(), autocast:
            try:
                _, _, masks = next(frames)
            except StopIteration:
                return
        yield masks


def offline_frames(model, folder: Path, n_obj: int, dtype: str):
    from masklet import VideoPredictor

    predictor = VideoPredictor(model, fill_hole_area=0, progress=False,
                               precision=PRECISION[dtype])
    state = predictor.init_state(str(folder))
    for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
    for _, _, masks in predictor.propagate_in_video(state):
        yield masks


def stream_frames(model, folder: Path, n_obj: int, dtype: str):
    from masklet import StreamingTracker

    tracker = StreamingTracker(model, fill_hole_area=0, precision=PRECISION[dtype])
    with tracker.start(str(folder)) as session:
        for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
            session.add_points(obj_id, [[x, y]], [1])
        for frame in session:
            yield frame.masks


def lockstep(runs: dict, num_frames: int) -> dict:
    """Advance every run one frame at a time, in turn; per run: CPU and wall seconds of
    each frame, and its masks (float32 logits)."""
    out = {name: {"cpu": [], "wall": [], "masks": []} for name in runs}
    for _ in range(num_frames):
        for name, frames in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            masks = next(frames)
            out[name]["cpu"].append(time.process_time() - cpu)
            out[name]["wall"].append(time.perf_counter() - wall)
            out[name]["masks"].append(masks.float())
    return out


def steady(values: list[float], warmup: int) -> float:
    return float(np.mean(values[warmup:]))


def agreement(masks: list[torch.Tensor], baseline: list[torch.Tensor]) -> str:
    """Mean foreground IoU (frames x objects with a non-empty union) and the lowest
    per-frame correlation of the logits, of masks against baseline masks."""
    ious, corr = [], []
    for m, b in zip(masks, baseline):
        for mi, bi in zip(m > 0, b > 0):
            union = (mi | bi).sum().item()
            if union:
                ious.append((mi & bi).sum().item() / union)
        x, y = m.flatten().double(), b.flatten().double()
        x, y = x - x.mean(), y - y.mean()
        if x.norm() > 0 and y.norm() > 0:  # all-absent frames (-1024 everywhere) are flat
            corr.append((x @ y / (x.norm() * y.norm())).item())
    iou = f"{np.mean(ious):.3f}" if ious else "n/a (empty)"
    return f"IoU {iou}, logit corr {min(corr):.4f}" if corr else f"IoU {iou}"


def speed(args) -> None:
    folder = _looped_folder(args.frames_dir, args.frames)
    ref, ours = build_pair(args.preset, args.image_size)
    if args.compile:
        from masklet.modeling.compile import compile_for_inference

        compile_for_inference(ours.model)  # compiled during the warm-up frames
    rows, notes, fp32 = [], [], {}
    for dtype in args.dtypes:
        for n in args.objects:
            runs = {"masklet offline": offline_frames(ours.model, folder, n, dtype),
                    "masklet stream": stream_frames(ours.model, folder, n, dtype)}
            if not args.skip_reference:
                runs = {"reference": reference_frames(ref, folder, n, dtype), **runs}
            res = lockstep(runs, args.frames)
            cpu = {k: steady(v["cpu"], args.warmup) for k, v in res.items()}
            wall = {k: steady(v["wall"], args.warmup) for k, v in res.items()}
            t_ref, w_ref = cpu.get("reference", float("nan")), wall.get("reference", float("nan"))
            rows.append([dtype, str(n), f"{t_ref:.2f}", f"{cpu['masklet offline']:.2f}",
                         f"{cpu['masklet stream']:.2f}",
                         f"{t_ref / cpu['masklet offline']:.2f}x",
                         f"{t_ref / cpu['masklet stream']:.2f}x",
                         f"{w_ref / wall['masklet offline']:.2f}x",
                         f"{w_ref / wall['masklet stream']:.2f}x"])
            notes.append(_agreement_note(dtype, n, res, fp32))
            _progress(rows[-1], notes[-1])
    print(f"{args.preset} at {args.image_size}px, bedroom frames, {args.frames} frames "
          f"({args.warmup} warm-up, the rest averaged), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; {cpu_line()}"
          + (", masklet compiled (torch.compile)" if args.compile else ""))
    print("s = CPU seconds per frame (process time); ratios reference / masklet, by CPU time "
          "and by wall time; runs interleaved frame by frame")
    print_table(["dtype", "objects", "ref s", "offline s", "stream s", "ref/offline",
                 "ref/stream", "wall ref/offline", "wall ref/stream"], rows)
    for note in notes:
        print(note)


def _agreement_note(dtype: str, n: int, res: dict, fp32: dict) -> str:
    """Parity in fp32 (masklet vs reference, stream vs offline); bf16 vs fp32 masks."""
    off = res["masklet offline"]["masks"]
    stream_err = max(rel_err(a, b) for a, b in zip(res["masklet stream"]["masks"], off))
    if dtype == "float32":
        fp32[n] = {k: v["masks"] for k, v in res.items()}
        line = f"fp32, {n} object(s): stream vs offline max rel err {stream_err:.1e}"
        if "reference" in res:
            ref_err = max(rel_err(a, b) for a, b in zip(off, res["reference"]["masks"]))
            line += f"; masklet vs reference max rel err {ref_err:.1e}"
        return line
    line = f"{dtype}, {n} object(s): stream vs offline max rel err {stream_err:.1e}"
    if n in fp32:
        line += f"; masklet bf16 vs fp32: {agreement(off, fp32[n]['masklet offline'])}"
        if "reference" in res and "reference" in fp32[n]:
            ref_agree = agreement(res["reference"]["masks"], fp32[n]["reference"])
            line += f"; reference bf16 vs fp32: {ref_agree}"
    return line


def _progress(row: list[str], note: str = "") -> None:
    """Print a result as soon as it is measured, so a run stopped part-way keeps it (the
    full table follows at the end)."""
    print("measured: " + " | ".join(row) + (f" ({note})" if note else ""), flush=True)


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
        kinds = ["masklet-stream"]
        if length <= args.max_ref_frames:
            kinds.append("reference-offline")
        for kind in kinds:
            cmd = [sys.executable, __file__, "_child", kind, str(length), args.preset,
                   str(args.image_size), str(args.frames_dir)]
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            rows.append([kind, str(length), f"{result['after_build_mb']:.0f}",
                         f"{result['peak_mb']:.0f}", f"{time.perf_counter() - start:.0f}"])
            _progress(rows[-1])
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
    p.add_argument("--compile", action="store_true",
                   help="speed: torch.compile masklet's model (compiled in the warm-up)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    speed(args) if args.mode == "speed" else memory(args)


if __name__ == "__main__":
    main()
