"""`masklet batch` throughput: videos per minute with 1 and 2 workers on this machine.

Generated videos of uneven length (a square sliding over noise, JPEG folders) are tracked
from one click each by the bundled nano model, through the same Ray runner the command
uses (a fresh local Ray instance per worker count). Two figures per worker count:
"start-up" (Ray plus every worker's model loaded) and the throughput of the hand-out loop
once the workers are up (what a long batch converges to); "end to end" includes start-up.

    python benchmarks/batch.py                      # 8 videos of 12..36 frames, 256x192
    python benchmarks/batch.py --videos 16 --frames 48
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_line, print_table

from masklet.batch.manifest import Job
from masklet.batch.runner import Dispatcher, ModelSpec, connect, new_actor, start_workers
from masklet.batch.work import RunOptions
from masklet.cli.prompts import VideoPrompt


def make_videos(root: Path, count: int, max_frames: int, width: int, height: int) -> list[Job]:
    """`count` JPEG folders, lengths spread from a third of `max_frames` up to it."""
    jobs = []
    rng = np.random.default_rng(0)
    for k in range(count):
        frames = max(2, round(max_frames * (1 + 2 * k / max(count - 1, 1)) / 3))
        folder = root / f"v{k:03d}"
        folder.mkdir()
        background = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        side = height // 3
        for i in range(frames):
            image = background.copy()
            x = (width // 8 + 2 * i) % (width - side)
            image[side:2 * side, x:x + side] = (220, 40, 40)
            Image.fromarray(image).save(folder / f"{i:05d}.jpg")
        click = VideoPrompt(0, 1, [[width // 8 + side / 2, 1.5 * side]], [1])
        jobs.append(Job(k + 1, folder.name, folder, prompts=(click,)))
    return jobs


def measure(jobs: list[Job], out_dir: Path, workers: int, threads: int | None) -> dict:
    """Run `jobs` on `workers` fresh workers; `threads`: torch threads per worker (None:
    the command's own choice, this machine's cores shared out)."""
    import ray

    start = time.perf_counter()
    pool = connect(None, workers)
    if threads is not None:
        pool = replace(pool, cpus=float(threads))
    spec = ModelSpec()
    actors = start_workers(pool, spec)
    ready = time.perf_counter()
    records: list[dict] = []
    dispatcher = Dispatcher(actors, lambda: new_actor(pool, spec), out_dir,
                            RunOptions(overlay=False, coco=True))
    dispatcher.run(jobs, records.append)
    done = time.perf_counter()
    dispatcher.close()
    ray.shutdown()
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} video(s) failed: {failed[0]['error']}")
    return {"threads": int(pool.cpus), "startup": ready - start, "loop": done - ready,
            "total": done - start, "frames": sum(r["frames"] for r in records),
            "videos": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=36, help="frames of the longest video")
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{cpu_line()}; model: bundled nano (256 px)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = make_videos(Path(tmp), args.videos, args.frames, width, height)
        print(f"{len(jobs)} videos, {args.size}, "
              f"{sum(len(list(j.video.iterdir())) for j in jobs)} frames in all")
        for workers in args.workers:
            results[workers] = measure(jobs, Path(tmp) / f"out{workers}", workers, None)
        if 1 in args.workers and (os.cpu_count() or 1) > 1:
            # Is one worker held back by its own threads? The same worker on one thread.
            results["1, 1 thread"] = measure(jobs, Path(tmp) / "out1t", 1, 1)
    rows = []
    for workers, r in results.items():
        rows.append([str(workers), str(r["threads"]), f"{r['startup']:.1f}",
                     f"{60 * r['videos'] / r['loop']:.1f}", f"{r['frames'] / r['loop']:.1f}",
                     f"{60 * r['videos'] / r['total']:.1f}"])
    print_table(["workers", "threads each", "start-up s", "videos/min", "frames/s",
                 "videos/min end to end"], rows)
    if 1 in results and 2 in results:
        one, two = results[1], results[2]
        print(f"2 workers / 1 worker: {one['loop'] / two['loop']:.2f}x (loop), "
              f"{one['total'] / two['total']:.2f}x (end to end)")


if __name__ == "__main__":
    main()
