"""Image predictor speed: masklet vs the official SAM 2 on the same weights, in one process.

    python benchmarks/image.py [--preset sam2.1_hiera_tiny] [--image PATH] [--repeats 3]
                               [--device cpu] [--threads N]

Both predictors get the same seeded random weights (no checkpoint download). Their
steps are interleaved (reference, masklet, reference, ...) so background load hits
both alike; the table shows median seconds after one untimed warm-up call each.
"""

from __future__ import annotations

import argparse
import os
import platform
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import build_official, median, print_table, rel_err, timed, use_plain_transforms

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "images" / "truck.jpg"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sam2.1_hiera_tiny")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    return parser.parse_args()


def load_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"image not found: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def build_pair(preset: str, device: torch.device):
    """(official predictor, masklet predictor) sharing one random state dict."""
    use_plain_transforms()  # before sam2's image predictor imports torchvision
    try:
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as exc:
        raise SystemExit(
            f"the baseline needs the official package (pip install sam2): {exc}"
        ) from exc

    from masklet import ImagePredictor, build_model

    official = build_official(preset, device=str(device))
    ours = build_model(preset, checkpoint=official.state_dict(), device=device)
    return SAM2ImagePredictor(official), ImagePredictor(ours)


def run(predictors: dict, image: np.ndarray, repeats: int, device: torch.device):
    """Interleaved timings {(name, step): [seconds]} and each predictor's last output."""
    h, w = image.shape[:2]
    click = dict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]),
                 multimask_output=True)
    times: dict[tuple[str, str], list[float]] = {}
    outputs = {}
    for rep in range(repeats + 1):  # the first round warms up and is not counted
        for name, predictor in predictors.items():
            with torch.inference_mode():
                t_set, _ = timed(partial(predictor.set_image, image), device)
                t_pred, outputs[name] = timed(partial(predictor.predict, **click), device)
            if rep:
                times.setdefault((name, "set_image"), []).append(t_set)
                times.setdefault((name, "predict"), []).append(t_pred)
    return times, outputs


def report(args, image: np.ndarray, device: torch.device, times, outputs) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"preset {args.preset}, image {args.image.name} {image.shape[1]}x{image.shape[0]}, "
          f"device {device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"repeats {args.repeats} (median), load average {load}\n")
    rows = []
    for step in ("set_image", "predict"):
        ref, ours = median(times[("reference", step)]), median(times[("masklet", step)])
        rows.append([step, f"{ref:.4f}", f"{ours:.4f}", f"{ref / ours:.2f}x"])
    print_table(["step", "reference s", "masklet s", "ref/masklet"], rows)
    ref_low, ours_low = outputs["reference"][2], outputs["masklet"][2]
    print(f"\nlow-res logits {tuple(ours_low.shape)}: max relative difference "
          f"{rel_err(ours_low, ref_low):.2e} (max|d| / max(1, max|ref|))")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    image = load_rgb(args.image)
    reference, ours = build_pair(args.preset, device)
    times, outputs = run({"reference": reference, "masklet": ours}, image, args.repeats, device)
    report(args, image, device, times, outputs)


if __name__ == "__main__":
    main()
