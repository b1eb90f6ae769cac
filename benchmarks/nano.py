"""J&F of the bundled nano model next to two baselines, on data it never trained on.

Held-out sets: 50 synthetic videos (seeds from 5,000,000 on; training uses seeds below
4,000) and the DAVIS 2016 sequences of ../shared/data left out of its training
(kite-surf, paragliding-launch, soapbox). Every object is prompted with its
ground-truth mask on the first frame (semi-supervised VOS). J&F follows the DAVIS
protocol (first and last frames not scored). Baselines, on the same data:
  - copy: the first-frame mask repeated on every frame;
  - no memory: the same model and prompts, but tracked frames leave nothing in memory
    (each frame sees only the prompted frame: no recent-frame memories, no pointers of
    tracked frames).

    python benchmarks/nano.py [--checkpoint weights.safetensors] [--videos 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from masklet import VideoPredictor, build_model
from masklet.bundled import bundled_checkpoint, bundled_preset
from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.eval.metrics import boundary_f_measure, region_similarity

REPO = Path(__file__).resolve().parents[1]
DAVIS = REPO.parent / "shared" / "data" / "davis2016-train"
HELD_OUT_DAVIS = ["kite-surf", "paragliding-launch", "soapbox"]
FIRST_EVAL_SEED = 5_000_000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    p.add_argument("--preset", default=None)
    p.add_argument("--videos", type=int, default=50)
    p.add_argument("--frames", type=int, default=24, help="frames per synthetic video")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def jf_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Mean J and F of one object over frames 1..T-2 (pred, gt: [T, H, W] bool)."""
    frames = range(1, len(gt) - 1)
    j = np.mean([region_similarity(gt[t], pred[t]) for t in frames])
    f = np.mean([boundary_f_measure(gt[t], pred[t]) for t in frames])
    return float(j), float(f)


def track(predictor: VideoPredictor, frames, first_masks: dict[int, np.ndarray],
          use_memory: bool) -> dict[int, np.ndarray]:
    """Masks [T, H, W] per object id, prompted by their first-frame masks."""
    state = predictor.init_state(frames)
    for obj_id, mask in first_masks.items():
        predictor.add_new_mask(state, 0, obj_id, mask)
    out = {obj_id: [] for obj_id in first_masks}
    for _, obj_ids, logits in predictor.propagate_in_video(state):
        for obj_id, m in zip(obj_ids, (logits[:, 0] > 0).cpu().numpy()):
            out[obj_id].append(m)
        if not use_memory:
            for obj in state.objects.values():
                obj.non_cond_outputs.clear()
    return {k: np.stack(v) for k, v in out.items()}


def evaluate(predictor, videos) -> dict[str, list[tuple[float, float]]]:
    """Per-object (J, F) for the model, the no-memory model and the copy baseline."""
    scores = {"masklet nano": [], "no memory": [], "copy first mask": []}
    for frames, gt in videos:
        ids = [i for i in np.unique(gt[0]) if i != 0]
        first = {int(i): gt[0] == i for i in ids}
        with torch.inference_mode():
            full = track(predictor, frames, first, use_memory=True)
            amnesic = track(predictor, frames, first, use_memory=False)
        for i in ids:
            truth = gt == i
            scores["masklet nano"].append(jf_scores(full[int(i)], truth))
            scores["no memory"].append(jf_scores(amnesic[int(i)], truth))
            scores["copy first mask"].append(jf_scores(np.repeat(truth[:1], len(truth), 0), truth))
    return scores


def synthetic_videos(count: int, num_frames: int):
    cfg = SyntheticVideoConfig(num_frames=num_frames, height=256, width=256)
    for i in range(count):
        clip = generate_video(FIRST_EVAL_SEED + i, cfg)
        yield list(clip.frames), clip.masks


def davis_videos():
    for seq in HELD_OUT_DAVIS:
        jpgs = sorted((DAVIS / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        pngs = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in jpgs]
        gt = np.stack([(np.asarray(Image.open(p)) > 0).astype(np.uint8) for p in pngs])
        yield frames, gt


def report(name: str, scores: dict, seconds: float) -> None:
    print(f"\n{name} ({len(next(iter(scores.values())))} objects, {seconds:.0f} s)")
    print(f"  {'method':<18} {'J&F':>6} {'J':>6} {'F':>6}")
    for method, pairs in scores.items():
        j, f = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        print(f"  {method:<18} {(j + f) / 2:6.3f} {j:6.3f} {f:6.3f}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or bundled_checkpoint()
    model = build_model(args.preset or bundled_preset(), checkpoint=checkpoint)
    predictor = VideoPredictor(model, progress=False)
    print(f"model {model.config.name} from {checkpoint}")
    start = time.perf_counter()
    report(f"held-out synthetic videos ({args.videos} x {args.frames} frames, 256 px)",
           evaluate(predictor, synthetic_videos(args.videos, args.frames)),
           time.perf_counter() - start)
    if not DAVIS.is_dir():
        sys.exit(f"DAVIS sequences not found at {DAVIS}; skipped the real-video part")
    start = time.perf_counter()
    report(f"held-out DAVIS 2016 sequences {HELD_OUT_DAVIS}", evaluate(predictor, davis_videos()),
           time.perf_counter() - start)


if __name__ == "__main__":
    main()
