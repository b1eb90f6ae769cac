"""bf16 against fp32, masklet against the official predictor, on this CPU, in one run.

Prints the CPU model and its bf16 features (avx512_bf16, AMX), then for 1 and 3 objects
tracked through the real bedroom frames: seconds per frame in steady state (frames after
``--warmup``, when the memory bank is full) of the official predictor in fp32 and under
bf16 autocast (its documented way), and of masklet's VideoPredictor with
``precision="fp32"`` and ``"bf16"``; all four run interleaved frame by frame, so load
from other processes falls on all alike. Ratios: masklet fp32 / masklet bf16 (the bf16
gain) and official bf16 / masklet bf16. Agreement: mean foreground IoU of each
predictor's bf16 masks with its own fp32 masks; and, with trained weights (the bundled
nano model, ``--nano-frames``), the same IoU on real masks.

Random weights (seeded, the same in both implementations): compute cost does not depend
on weight values. The speed targets of issue 21 apply to CPUs with avx512_bf16 or AMX;
elsewhere bf16 is expected to be slower than fp32 and the script says so.

    python benchmarks/bf16.py                                   # tiny, 1024 px, 1 and 3 objects
    python benchmarks/bf16.py --image-size 256 --frames 4 --warmup 2 --objects 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the official predictor's progress bars
import torch  # noqa: E402 (imports tqdm, which reads the variable then)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream import agreement, lockstep, offline_frames, reference_frames, steady  # noqa: E402

from _common import cpu_line, print_table  # noqa: E402
from video import CLICKS, DEFAULT_FRAMES, build_pair  # noqa: E402

from masklet.tracking.precision import cpu_bf16_features, recommended_precision  # noqa: E402

RUNS = (("official fp32", "float32"), ("official bf16", "bfloat16"),
        ("masklet fp32", "float32"), ("masklet bf16", "bfloat16"))


def cpu_description() -> list[str]:
    """Lines naming the CPU, its relevant flags and what masklet concludes from them."""
    native = cpu_bf16_features()
    return [
        cpu_line(),
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"threads {torch.get_num_threads()}; native bf16: {', '.join(native) or 'none'} "
        f"-> recommended precision {recommended_precision('cpu')}",
    ]


def speed_rows(args, folder: Path) -> tuple[list[list[str]], list[str]]:
    """One row per object count: the four runs' s/frame, the ratios and the IoUs."""
    ref, ours = build_pair(args.preset, args.image_size)
    rows, notes = [], []
    for n in args.objects:
        runs = {}
        for name, dtype in RUNS:
            if name.startswith("official"):
                runs[name] = reference_frames(ref, folder, n, dtype)
            else:
                runs[name] = offline_frames(ours.model, folder, n, dtype)
        res = lockstep(runs, args.frames)
        wall = {k: steady(v["wall"], args.warmup) for k, v in res.items()}
        cpu = {k: steady(v["cpu"], args.warmup) for k, v in res.items()}
        masks = {k: v["masks"] for k, v in res.items()}
        ours_iou = agreement(masks["masklet bf16"], masks["masklet fp32"])
        official_iou = agreement(masks["official bf16"], masks["official fp32"])
        rows.append([str(n), *(f"{wall[name]:.2f}" for name, _ in RUNS),
                     f"{wall['official fp32'] / wall['official bf16']:.2f}x",
                     f"{wall['masklet fp32'] / wall['masklet bf16']:.2f}x",
                     f"{wall['official bf16'] / wall['masklet bf16']:.2f}x",
                     f"{wall['official fp32'] / wall['masklet fp32']:.2f}x"])
        notes.append(f"{n} object(s): CPU s/frame "
                     + ", ".join(f"{name} {cpu[name]:.2f}" for name, _ in RUNS)
                     + f"; bf16 vs fp32 masks: masklet {ours_iou}; official {official_iou}")
        print("measured: " + " | ".join(rows[-1]) + f" ({notes[-1]})", flush=True)
    return rows, notes


def nano_agreement(folder: Path, num_frames: int) -> str:
    """bf16 vs fp32 masks of the trained nano model on the first frames of ``folder``."""
    from masklet import build_model

    model = build_model()
    frames = sorted(folder.glob("*.jpg"))[:num_frames]
    masks = {}
    for dtype in ("float32", "bfloat16"):
        out = offline_frames(model, folder_of(frames), len(CLICKS), dtype)
        masks[dtype] = [m.float() for m in out]
    size = model.config.image_size
    return (f"trained nano model ({size} px), {len(frames)} bedroom frames, {len(CLICKS)} "
            f"objects, bf16 vs fp32 masks: {agreement(masks['bfloat16'], masks['float32'])}")


def folder_of(paths: list[Path]) -> Path:
    """A temporary folder of links to ``paths`` renamed 00000.jpg, 00001.jpg, ..."""
    out = Path(tempfile.mkdtemp(prefix="bf16-bench-"))
    for i, path in enumerate(paths):
        (out / f"{i:05d}.jpg").symlink_to(path.resolve())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="sam2.1_hiera_tiny")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--frames", type=int, default=10, help="frames tracked per run")
    p.add_argument("--warmup", type=int, default=7,
                   help="frames not timed (7: the memory bank is full from then on)")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--nano-frames", type=int, default=60,
                   help="frames for the trained-weights agreement (0: skip)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if not args.frames_dir.is_dir():
        sys.exit(f"frames folder not found: {args.frames_dir}")
    if not 0 <= args.warmup < args.frames:
        sys.exit(f"--warmup must be in [0, --frames), got {args.warmup}")
    if max(args.objects) > len(CLICKS) or min(args.objects) < 1:
        sys.exit(f"--objects must be between 1 and {len(CLICKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the bf16 warning on CPUs without it: said below
    for line in cpu_description():
        print(line, flush=True)
    start = time.perf_counter()
    paths = sorted(args.frames_dir.glob("*.jpg"))
    folder = folder_of([paths[i % len(paths)] for i in range(args.frames)])
    rows, notes = speed_rows(args, folder)
    print(f"\n{args.preset} at {args.image_size}px, bedroom frames, {args.frames} frames "
          f"({args.warmup} warm-up, the rest averaged), wall seconds per frame, "
          f"load average {os.getloadavg()[0]:.1f}")
    print_table(["objects", *(name for name, _ in RUNS), "official fp32/bf16",
                 "masklet fp32/bf16", "official bf16/masklet bf16",
                 "official fp32/masklet fp32"], rows)
    for note in notes:
        print(note)
    if args.nano_frames:
        print(nano_agreement(args.frames_dir, args.nano_frames))
    if not cpu_bf16_features():
        print("note: this CPU has neither avx512_bf16 nor AMX, so bf16 is expected to be "
              "slower than fp32 here; the bf16 speed targets apply to CPUs with either.")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
