"""The ONNX Runtime tracker (masklet-runtime) next to masklet's PyTorch StreamingTracker.

One process, same (seeded random) weights: the model is exported with
`masklet.onnx.export_model` into a temporary folder, then
  speed:  seconds per tracked frame in steady state (frames after --warmup) of
          `OnnxStreamingTracker` and masklet's `StreamingTracker` (fp32, no prefetch thread,
          so both decode and preprocess frames inline), 1 and 3 objects on the real bedroom
          frames, run interleaved frame by frame so load from other processes falls on both
          alike; and the image encoder alone (ONNX graph vs `SAM2Model.forward_image`).
          Ratios are PyTorch / ONNX (above 1: ONNX Runtime is faster). Both use --threads.
  video:  masklet's VideoPredictor and `OnnxVideoPredictor` (as `masklet video` runs
          them): clicks on the middle frame, tracked forwards to the end and backwards to
          frame 0, in lockstep; seconds per result after --warmup results, and the whole run.
  correction: `OnnxVideoPredictor` after a correction: clicks on the middle frame, a
          propagation, a negative click on the last frame, the second propagation (which
          a correction needs), timed without a feature cache (the default) and with
          `feature_cache_bytes` room for every frame; ratio without / with.
  prefetch: the ONNX tracker reading frames inline (prefetch=0) against reading them
          ahead in its thread (the default, prefetch=2); ratio inline / ahead.
  size:   disk size of two fresh virtual environments: one with only the runtime's
          dependencies (`pip install ./runtime`) and one with torch==2.13.0 and masklet with
          its base dependencies (`pip install torch==2.13.0 .`).

    python benchmarks/onnx.py                    # tiny at 1024 px, 1 and 3 objects, both
    python benchmarks/onnx.py --skip-venvs --image-size 256 --frames 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import cpu_line, median, print_table, rel_err  # noqa: E402
from video import CLICKS, DEFAULT_FRAMES  # noqa: E402

# This script is named onnx.py: with its folder on the path, `import onnx` (done by the
# exporter) would find the script instead of the onnx package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="sam2.1_hiera_tiny")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--frames", type=int, default=12, help="frames tracked per run")
    p.add_argument("--warmup", type=int, default=3, help="tracked frames not timed")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--encoder-reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch threads and ONNX Runtime intra-op threads (default: all CPUs "
                        "this process may use)")
    p.add_argument("--export", type=Path, default=None,
                   help="reuse this export of the same preset and size, made from the same "
                        "seed-0 random weights (default: export into a temporary folder)")
    p.add_argument("--prefetch-rounds", type=int, default=3,
                   help="alternated whole runs of the ONNX tracker with prefetch 0 and 2 "
                        "(0: skip that part)")
    p.add_argument("--skip-venvs", action="store_true", help="skip the install-size part")
    p.add_argument("--skip-video", action="store_true", help="skip the video-predictor part")
    p.add_argument("--venv-root", type=Path, default=Path(tempfile.gettempdir()) / "masklet-venvs")
    return p.parse_args()


def build_and_export(preset: str, image_size: int, folder: Path, reuse: Path | None):
    """The seed-0 random-weight model, exported into `folder` (or `reuse`d: returned as is)."""
    from masklet import build_model, get_config
    from masklet.onnx import export_model

    torch.manual_seed(0)
    model = build_model(get_config(preset).with_image_size(image_size), random_weights=True)
    if reuse is not None:
        return model, reuse
    start = time.perf_counter()
    export_model(model, folder)
    print(f"exported {preset} at {image_size} px in {time.perf_counter() - start:.0f} s "
          f"({sum(f.stat().st_size for f in folder.iterdir()) / 2**20:.0f} MiB)")
    return model, folder


def encoder_rows(model, graphs, reps: int) -> list[list[str]]:
    """Median seconds of the image encoder alone, PyTorch and ONNX, interleaved."""
    x = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator()
                    .manual_seed(0))
    x_np = x.numpy()
    times = {"torch": [], "onnx": []}
    with torch.inference_mode():
        for rep in range(reps + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            ref = model.forward_image(x)
            t_torch = time.perf_counter() - start
            start = time.perf_counter()
            out = graphs.run("image_encoder", image=x_np)
            t_onnx = time.perf_counter() - start
            if rep:
                times["torch"].append(t_torch)
                times["onnx"].append(t_onnx)
    err = rel_err(out["image_embed"], ref.image_embed)
    t, o = median(times["torch"]), median(times["onnx"])
    return [["image encoder", "-", f"{t:.3f}", f"{o:.3f}", f"{t / o:.2f}x", f"{err:.1e}"]]


def add_clicks(session, n_obj: int) -> None:
    """One click per object on frame 0 (the same for both trackers)."""
    for obj_id, (x, y) in enumerate(CLICKS[:n_obj], start=1):
        session.add_points(obj_id, [[x, y]], [1])


def torch_frames(model, folder: Path, n_obj: int):
    from masklet import StreamingTracker

    with StreamingTracker(model, prefetch=0).start(str(folder)) as session:
        add_clicks(session, n_obj)
        for frame in session:
            yield frame.masks.float().numpy()


def onnx_frames(graphs, folder: Path, n_obj: int):
    from masklet_runtime.tracker import OnnxStreamingTracker

    with OnnxStreamingTracker(graphs, prefetch=0).start(str(folder)) as session:
        add_clicks(session, n_obj)
        for frame in session:
            yield np.asarray(frame.masks)


def tracking_row(model, graphs, folder: Path, n_obj: int, frames: int, warmup: int):
    """Steady-state seconds per frame of both trackers, run in lockstep."""
    runs = {"torch": torch_frames(model, folder, n_obj), "onnx": onnx_frames(graphs, folder, n_obj)}
    wall = {k: [] for k in runs}
    last = {}
    for _ in range(frames):
        for name, gen in runs.items():
            start = time.perf_counter()
            last[name] = next(gen)
            wall[name].append(time.perf_counter() - start)
    for gen in runs.values():
        gen.close()
    t, o = (float(np.mean(wall[k][warmup:])) for k in ("torch", "onnx"))
    err = rel_err(last["onnx"], last["torch"])
    return ["tracking", str(n_obj), f"{t:.3f}", f"{o:.3f}", f"{t / o:.2f}x", f"{err:.1e}"]


def video_clicks(n_obj: int):
    return list(enumerate(CLICKS[:n_obj], start=1))


def torch_video(model, folder: Path, n_obj: int, frame: int):
    from masklet.predictor.video import VideoPredictor

    predictor = VideoPredictor(model, progress=False)
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        for obj_id, (x, y) in video_clicks(n_obj):
            predictor.add_new_points_or_box(state, frame, obj_id, points=[[x, y]], labels=[1])
        for reverse in (False, True):
            for _, _, logits in predictor.propagate_in_video(state, reverse=reverse):
                yield logits.float().numpy()


def onnx_video(graphs, folder: Path, n_obj: int, frame: int):
    from masklet_runtime.video import OnnxVideoPredictor

    clip = OnnxVideoPredictor(graphs, prefetch=0).open(str(folder))
    for obj_id, (x, y) in video_clicks(n_obj):
        clip.add_points(frame, obj_id, [[x, y]], [1])
    for result in clip.propagate():
        yield np.asarray(result.masks)


def video_row(model, graphs, folder: Path, n_obj: int, frames: int, warmup: int):
    """Both video predictors on clicks on the middle frame, in lockstep (frames read inline
    on both sides); seconds per result after `warmup`, and the whole run."""
    frame = frames // 2
    runs = {"torch": torch_video(model, folder, n_obj, frame),
            "onnx": onnx_video(graphs, folder, n_obj, frame)}
    wall = {k: [] for k in runs}
    worst = 0.0
    for _ in range(frames + 1):  # frame..end, then frame..0
        got = {}
        for name, gen in runs.items():
            start = time.perf_counter()
            got[name] = next(gen)
            wall[name].append(time.perf_counter() - start)
        worst = max(worst, rel_err(got["onnx"], got["torch"]))
    for gen in runs.values():
        assert next(gen, None) is None, "the predictors yielded more results than expected"
    t, o = (float(np.mean(wall[k][warmup:])) for k in ("torch", "onnx"))
    t_all, o_all = sum(wall["torch"]), sum(wall["onnx"])
    return [["video: per result", str(n_obj), f"{t:.3f}", f"{o:.3f}", f"{t / o:.2f}x",
             f"{worst:.1e}"],
            ["video: whole run", str(n_obj), f"{t_all:.2f}", f"{o_all:.2f}",
             f"{t_all / o_all:.2f}x", ""]]


def correction_row(graphs, folder: Path, n_obj: int, frames: int) -> list[str]:
    """Seconds of the first and the second propagation (after a negative click on the last
    frame) without a feature cache and with room for every frame; the masks must agree."""
    from masklet_runtime.video import OnnxVideoPredictor

    timings, masks = {}, {}
    for budget in (0, 1 << 40):
        clip = OnnxVideoPredictor(graphs, prefetch=0, feature_cache_bytes=budget).open(
            str(folder))
        for obj_id, (x, y) in video_clicks(n_obj):
            clip.add_points(frames // 2, obj_id, [[x, y]], [1])
        start = time.perf_counter()
        first = [np.asarray(r.masks) for r in clip.propagate()]
        middle = time.perf_counter()
        x, y = CLICKS[0]
        clip.add_points(frames - 1, 1, [[x + 40, y]], [0])
        second = [np.asarray(r.masks) for r in clip.propagate()]
        timings[budget] = (middle - start, time.perf_counter() - middle)
        masks[budget] = np.stack(first + second)
    if not np.array_equal(masks[0], masks[1 << 40]):
        raise SystemExit("the feature cache changed the masks")
    (plain_1, plain_2), (kept_1, kept_2) = timings[0], timings[1 << 40]
    return [str(n_obj), f"{plain_1:.2f}", f"{kept_1:.2f}", f"{plain_2:.2f}", f"{kept_2:.2f}",
            f"{plain_2 / kept_2:.2f}x"]


def prefetch_row(graphs, folder: Path, n_obj: int, rounds: int, warmup: int) -> list[str]:
    """Steady-state seconds per frame of the ONNX tracker reading frames inline (prefetch 0)
    and ahead in its thread (prefetch 2): whole runs, alternated (a reader thread cannot be
    run in lockstep with another tracker); the median of `rounds` runs each."""
    from masklet_runtime.tracker import OnnxStreamingTracker

    per_frame: dict[int, list[float]] = {0: [], 2: []}
    for _ in range(rounds):
        for prefetch in per_frame:
            with OnnxStreamingTracker(graphs, prefetch=prefetch).start(str(folder)) as session:
                add_clicks(session, n_obj)
                stamps = [time.perf_counter() for _ in session]
            per_frame[prefetch].append((stamps[-1] - stamps[warmup - 1])
                                       / (len(stamps) - warmup))
    inline, ahead = median(per_frame[0]), median(per_frame[2])
    return [str(n_obj), f"{inline:.3f}", f"{ahead:.3f}", f"{inline / ahead:.2f}x"]


def venv_size(path: Path, packages: list[str]) -> int:
    """Bytes on disk of a fresh venv at `path` after `pip install packages` (then removed)."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = subprocess.run([str(path / "bin" / "pip"), "install", "--no-cache-dir", *packages],
                         capture_output=True, text=True)
    if pip.returncode:
        sys.exit(f"pip install {' '.join(packages)} failed:\n{pip.stderr[-3000:]}")
    du = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    shutil.rmtree(path, ignore_errors=True)
    return int(du.stdout.split()[0])


def venv_rows(root: Path) -> list[list[str]]:
    runtime = venv_size(root / "runtime", [str(REPO / "runtime")])
    with_torch = venv_size(root / "torch", ["torch==2.13.0", str(REPO)])
    return [["runtime only: pip install ./runtime", f"{runtime / 2**20:.0f} MiB"],
            ["torch: pip install torch==2.13.0 . (masklet + base deps)",
             f"{with_torch / 2**20:.0f} MiB"],
            ["runtime / torch", f"{runtime / with_torch:.3f}"]]


def main() -> None:
    args = parse_args()
    import onnxruntime

    from masklet_runtime.graphs import load_graphs

    torch.set_num_threads(args.threads)
    print(cpu_line())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{onnxruntime.__version__} ({args.threads} intra-op threads), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    frames = sorted(args.frames_dir.glob("*.jpg"))[: args.frames]
    if len(frames) < args.frames:
        sys.exit(f"need {args.frames} JPEG frames in {args.frames_dir}, found {len(frames)}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "frames"
        clip.mkdir()
        for f in frames:
            shutil.copy(f, clip / f.name)
        model, export = build_and_export(args.preset, args.image_size, Path(tmp) / "export",
                                         args.export)
        graphs = load_graphs(export, intra_op_threads=args.threads)
        rows = encoder_rows(model, graphs, args.encoder_reps)
        for n in args.objects:
            rows.append(tracking_row(model, graphs, clip, n, args.frames, args.warmup))
        if not args.skip_video:
            for n in args.objects:
                rows += video_row(model, graphs, clip, n, args.frames, args.warmup)
        correction_rows = [correction_row(graphs, clip, n, args.frames)
                           for n in args.objects] if not args.skip_video else []
        prefetch_rows = [prefetch_row(graphs, clip, n, args.prefetch_rounds, args.warmup)
                         for n in args.objects] if args.prefetch_rounds > 0 else []
    print(f"\n{args.preset} at {args.image_size} px, {args.frames} bedroom frames "
          f"({args.warmup} warm-up, the rest averaged); seconds (wall); ratio PyTorch / ONNX; "
          "err: max |ONNX - PyTorch| / max(1, max |PyTorch|) on the last output (video: "
          "on any result)")
    print_table(["what", "objects", "PyTorch s", "ONNX s", "ratio", "err"], rows)
    if correction_rows:
        print("\nONNX video predictor, a correction: seconds of the first propagation and of "
              "the second one it needs, without a feature cache and with room for every frame "
              "(masks identical); ratio without / with, second pass")
        print_table(["objects", "1st, none", "1st, kept", "2nd, none", "2nd, kept", "ratio"],
                    correction_rows)
    if prefetch_rows:
        print(f"\nONNX tracker, frames read inline vs ahead in its thread (seconds per frame, "
              f"median of {args.prefetch_rounds} alternated runs; ratio inline / ahead)")
        print_table(["objects", "prefetch 0", "prefetch 2", "ratio"], prefetch_rows)
    if not args.skip_venvs:
        print(f"\nfresh virtual environments under {args.venv_root} (du -sb):")
        print_table(["venv", "size"], venv_rows(args.venv_root))


if __name__ == "__main__":
    main()
