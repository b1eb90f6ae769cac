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
A third column, "nano + motion", is the same model tracking motion-aware (SAMURAI's
Kalman filter with its published defaults, `VideoPredictor(motion=True)`).

A second table says where the masks are lost: mean J over spans of frames after the
prompt (how fast a track decays), and on frames where an object is out of view, the
share predicted empty (the object-presence head's job; such frames score J = 1 only
when empty).

    python benchmarks/nano.py [--checkpoint weights.safetensors] [--videos 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
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
    p.add_argument("--no-motion", dest="motion", action="store_false",
                   help="leave out the motion-aware column")
    return p.parse_args()


SPANS = ((1, 2), (3, 5), (6, 11), (12, None))  # frame ranges after the prompt, inclusive


@dataclass
class ObjectScore:
    """One object's scores: J and F per frame [T], and which frames it is out of view [T]."""

    j: np.ndarray
    f: np.ndarray
    absent: np.ndarray
    empty: np.ndarray  # [T] bool: the prediction is empty

    @property
    def jf(self) -> tuple[float, float]:
        """Mean J and F over frames 1..T-2 (the DAVIS protocol's scored frames)."""
        return float(self.j[1:-1].mean()), float(self.f[1:-1].mean())


def score_object(pred: np.ndarray, gt: np.ndarray) -> ObjectScore:
    """Scores of one object (pred, gt: [T, H, W] bool)."""
    j = np.array([region_similarity(g, p) for g, p in zip(gt, pred)])
    f = np.array([boundary_f_measure(g, p) for g, p in zip(gt, pred)])
    return ObjectScore(j, f, ~gt.any(axis=(1, 2)), ~pred.any(axis=(1, 2)))


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


def evaluate(predictor, videos, motion_predictor=None) -> dict[str, list[ObjectScore]]:
    """Per-object scores for the model, the no-memory model and the copy baseline (and the
    model tracking motion-aware, given ``motion_predictor``)."""
    scores = {"masklet nano": [], "no memory": [], "copy first mask": []}
    if motion_predictor is not None:
        scores["nano + motion"] = []
    for frames, gt in videos:
        ids = [i for i in np.unique(gt[0]) if i != 0]
        first = {int(i): gt[0] == i for i in ids}
        with torch.inference_mode():
            full = track(predictor, frames, first, use_memory=True)
            amnesic = track(predictor, frames, first, use_memory=False)
            moving = (track(motion_predictor, frames, first, use_memory=True)
                      if motion_predictor is not None else None)
        for i in ids:
            truth = gt == i
            if moving is not None:
                scores["nano + motion"].append(score_object(moving[int(i)], truth))
            scores["masklet nano"].append(score_object(full[int(i)], truth))
            scores["no memory"].append(score_object(amnesic[int(i)], truth))
            scores["copy first mask"].append(
                score_object(np.repeat(truth[:1], len(truth), 0), truth))
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


def _span_label(first: int, last: int | None) -> str:
    return f"J {first}-{last}" if last is not None else f"J {first}+"


def _span_mean(objects: list[ObjectScore], first: int, last: int | None) -> float:
    values = [o.j[first:None if last is None else last + 1] for o in objects]
    values = [v for v in values if len(v)]
    return float(np.mean(np.concatenate(values))) if values else float("nan")


def _out_of_view_empty(objects: list[ObjectScore]) -> np.ndarray:
    """For each out-of-view frame after the prompt, whether it was predicted empty [N]."""
    return np.concatenate([o.empty[1:][o.absent[1:]] for o in objects])


def report(name: str, scores: dict[str, list[ObjectScore]], seconds: float) -> None:
    print(f"\n{name} ({len(next(iter(scores.values())))} objects, {seconds:.0f} s)")
    print(f"  {'method':<18} {'J&F':>6} {'J':>6} {'F':>6}")
    for method, objects in scores.items():
        j = np.mean([o.jf[0] for o in objects])
        f = np.mean([o.jf[1] for o in objects])
        print(f"  {method:<18} {(j + f) / 2:6.3f} {j:6.3f} {f:6.3f}")
    spans = [_span_label(a, b) for a, b in SPANS]
    absent = len(_out_of_view_empty(next(iter(scores.values()))))  # same ground truth for all
    away = (f"share of the {absent} frames where an object is out of view that are "
            f"predicted empty" if absent else "no object is ever out of view here")
    print(f"  where it is lost: mean J by frames after the prompt; out of view: {away}")
    print(f"  {'method':<18} " + " ".join(f"{s:>7}" for s in spans) + f" {'out of view':>12}")
    for method, objects in scores.items():
        cells = " ".join(f"{_span_mean(objects, a, b):7.3f}" for a, b in SPANS)
        share = f"{_out_of_view_empty(objects).mean():12.3f}" if absent else f"{'-':>12}"
        print(f"  {method:<18} {cells} {share}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or bundled_checkpoint()
    model = build_model(args.preset or bundled_preset(), checkpoint=checkpoint)
    predictor = VideoPredictor(model, progress=False)
    moving = VideoPredictor(model, progress=False, motion=True) if args.motion else None
    print(f"model {model.config.name} from {checkpoint}")
    start = time.perf_counter()
    report(f"held-out synthetic videos ({args.videos} x {args.frames} frames, 256 px)",
           evaluate(predictor, synthetic_videos(args.videos, args.frames), moving),
           time.perf_counter() - start)
    if not DAVIS.is_dir():
        sys.exit(f"DAVIS sequences not found at {DAVIS}; skipped the real-video part")
    start = time.perf_counter()
    report(f"held-out DAVIS 2016 sequences {HELD_OUT_DAVIS}",
           evaluate(predictor, davis_videos(), moving), time.perf_counter() - start)


if __name__ == "__main__":
    main()
