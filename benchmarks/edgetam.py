"""EdgeTAM on a CPU: masklet `edgetam` vs the official EdgeTAM vs masklet sam2.1_hiera_tiny.

Seconds per tracked frame in steady state (frames after --warmup, by default once the
memory bank is full: 1 prompted + 6 recent frames), same random weights for both EdgeTAM
implementations, real bedroom frames. The three run interleaved, frame by frame, so load
from other processes falls on all of them alike; medians of wall time are reported with
the ratios. The official EdgeTAM cannot track two objects at once (its perceiver fails
on a batch), so its multi-object rows are empty.

The official code is imported in THIS process from ../shared/reference/edgetam (package
name `sam2`; this script never imports the official SAM 2), with the test harness's
stand-in torchvision for timm (tests/stubs). Needs timm (pip install --no-deps timm).

    python benchmarks/edgetam.py --image-size 1024 --frames 12 --objects 1 3

--memory: bounded memory of a long stream instead. One fresh child process streams the
bedroom frames, looped, through masklet edgetam's StreamingTracker (random weights whose
object score is raised so the object counts as present, as in the tests; one clicked
object) and reports its peak RSS (ru_maxrss) and current RSS at the given frame counts;
the growth from the first to the last count is what the issue bounds (< 100 MB from 100
to 5,000 frames). Use a small --image-size: 5,000 frames at 1024 px take hours on a CPU.

    OMP_NUM_THREADS=1 python benchmarks/edgetam.py --memory --image-size 256 \
        --lengths 100 1000 2000 5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TQDM_DISABLE", "1")  # the official predictor's progress bars
sys.path.insert(0, str(HERE))
from bf16 import cpu_description  # noqa: E402

from _common import print_table  # noqa: E402
from video import CLICKS, DEFAULT_FRAMES  # noqa: E402

from masklet import VideoPredictor, build_model, get_config  # noqa: E402


def _official(image_size: int):
    """The official EdgeTAM video predictor with random weights (tests/edgetam_oracle.py)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import edgetam_oracle

    edgetam_oracle._set_up_imports()
    return edgetam_oracle.build(image_size, seed=0)


def _frames(predictor, folder: str, n_obj: int):
    """Masks per frame from a predictor tracking ``n_obj`` clicked objects."""
    with torch.inference_mode():
        state = predictor.init_state(folder)
        for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id,
                                            points=[[x, y]], labels=[1])
        frames = predictor.propagate_in_video(state)
    while True:
        with torch.inference_mode():
            try:
                yield next(frames)
            except StopIteration:
                return


def _interleaved(runs: dict, warmup: int) -> dict[str, float]:
    """Advance every run one frame at a time; median seconds per frame after ``warmup``."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    active = dict(runs)
    frame = 0
    while active:
        for name in list(active):
            start = time.perf_counter()
            try:
                next(active[name])
            except StopIteration:
                del active[name]
                continue
            if frame > warmup:
                times[name].append(time.perf_counter() - start)
        frame += 1
    return {name: statistics.median(t) if t else float("nan") for name, t in times.items()}


def _folder(src: Path, count: int) -> str:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgetam_bench_{count}"
    out.mkdir(exist_ok=True)
    for i in range(count):
        link = out / f"{i:05d}.jpg"
        if not link.exists():
            os.symlink(src / f"{i:05d}.jpg", link)
    return str(out)


def _rss_mb() -> tuple[float, float]:
    """(peak RSS, current RSS) of this process in MB (Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return peak, pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _looped(folder: Path, count: int):
    """`count` RGB frames cycling through the folder's JPEGs, decoded one at a time."""
    import numpy as np
    from PIL import Image

    paths = sorted(folder.glob("*.jpg"))
    for i in range(count):
        with Image.open(paths[i % len(paths)]) as im:
            yield np.asarray(im.convert("RGB"))


def _memory_child(image_size: int, lengths: list[int], folder: Path) -> None:
    """Stream max(lengths) frames; print one JSON line per length reached."""
    from masklet import StreamingTracker

    torch.manual_seed(0)
    model = build_model(get_config("edgetam").with_image_size(image_size), random_weights=True)
    with torch.no_grad():  # random weights call every object absent; make it present
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(1.0)
    print(json.dumps({"frames": 0, "peak_mb": _rss_mb()[0], "rss_mb": _rss_mb()[1]}),
          flush=True)
    start, count, wanted = time.perf_counter(), 0, set(lengths)
    with torch.inference_mode(), StreamingTracker(model, fill_hole_area=0).start(
            _looped(folder, max(lengths))) as session:
        session.add_points(1, [list(CLICKS[0])], [1])
        for _ in session:
            count += 1
            if count in wanted:
                peak, rss = _rss_mb()
                print(json.dumps({"frames": count, "peak_mb": peak, "rss_mb": rss,
                                  "memories": session.retained_memories(),
                                  "seconds": time.perf_counter() - start}), flush=True)


def memory(args) -> None:
    """Run `_memory_child` in a fresh interpreter and tabulate its RSS per length."""
    lengths = sorted(set(args.lengths))
    cmd = [sys.executable, __file__, "_memory_child", str(args.image_size),
           str(args.frames_dir), *map(str, lengths)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows, results = [], []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as child:
        for line in child.stdout:
            results.append(json.loads(line))
            print("measured:", line.strip(), flush=True)
    if child.returncode != 0:
        raise SystemExit(f"the streaming child failed (exit {child.returncode})")
    for r in results:
        rows.append([str(r["frames"]), f"{r['peak_mb']:.0f}", f"{r['rss_mb']:.0f}",
                     str(r.get("memories", "-")), f"{r.get('seconds', 0):.0f}"])
    print(f"\nmasklet edgetam streaming, {args.image_size} px, fp32, {args.threads} thread(s), "
          "one object, bedroom frames looped")
    print_table(["frames", "peak RSS MB", "RSS MB", "memories held", "seconds"], rows)
    tracked = [r for r in results if r["frames"] > 0]
    if len(tracked) >= 2:
        growth = tracked[-1]["peak_mb"] - tracked[0]["peak_mb"]
        print(f"peak RSS growth from frame {tracked[0]['frames']} to {tracked[-1]['frames']}: "
              f"{growth:.1f} MB (target < 100 MB)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory_child":
        size, folder, *lengths = sys.argv[2:]
        _memory_child(int(size), [int(n) for n in lengths], Path(folder))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--warmup", type=int, default=7, help="frames left out of the medians")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--memory", action="store_true",
                   help="measure streaming RSS at --lengths frames instead of speed")
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 2000, 5000])
    args = p.parse_args()
    if args.memory:
        memory(args)
        return
    if args.frames <= args.warmup + 1:
        p.error("--frames must exceed --warmup + 1 (nothing would be timed)")
    torch.set_num_threads(args.threads)
    for line in cpu_description():
        print(line)
    folder = _folder(args.frames_dir, args.frames)
    official = _official(args.image_size)
    edgetam = build_model(get_config("edgetam").with_image_size(args.image_size),
                          checkpoint=official.state_dict())
    torch.manual_seed(0)
    tiny = build_model(get_config("sam2.1_hiera_tiny").with_image_size(args.image_size),
                       random_weights=True)
    rows = []
    for n in args.objects:
        runs = {
            "masklet edgetam": _frames(VideoPredictor(edgetam, fill_hole_area=0,
                                                      progress=False), folder, n),
            "masklet sam2.1 tiny": _frames(VideoPredictor(tiny, fill_hole_area=0,
                                                          progress=False), folder, n),
        }
        if n == 1:
            runs["official edgetam"] = _frames(official, folder, n)
        t = _interleaved(runs, args.warmup)
        ref = t.get("official edgetam", float("nan"))
        ours, base = t["masklet edgetam"], t["masklet sam2.1 tiny"]
        rows.append([str(n), f"{ours:.2f}", f"{ref:.2f}", f"{base:.2f}",
                     f"{ref / ours:.2f}x", f"{base / ours:.2f}x"])
    print(f"\n{args.image_size} px, fp32, {args.threads} thread(s), s/frame median of frames "
          f"{args.warmup + 1}..{args.frames - 1}")
    print_table(["objects", "masklet edgetam", "official edgetam", "masklet tiny",
                 "official/masklet", "tiny/edgetam"], rows)


if __name__ == "__main__":
    main()
