"""How well the review hints find wrongly tracked frames (issue 19, "Measure the hints").

Held-out synthetic videos at two speeds (`SyntheticVideoConfig.motion` 1, the default, and
0.25, slower and DAVIS-like; seeds from 5,000,000 on, as benchmarks/nano.py; the review
defaults were calibrated on seeds from 7,000,000 on) and the held-out DAVIS 2016
sequences of ../shared/data (kite-surf, paragliding-launch, soapbox: left out of the nano
model's training) are tracked with the bundled nano model from a first-frame mask prompt
(as benchmarks/nano.py prompts). Each tracked object-frame (the prompted frame 0 left
out) is wrong when J < 0.5 against the ground truth, and scored by
`masklet.tracking.review` with its default `ReviewConfig`. Printed per data set:
  - precision and recall of the flags;
  - the share of object-frames an annotator looks at to find 90 % of the wrong ones,
    walking in score order (the flags first, by descending score, then the rest, also
    by score) against scrubbing every object's frames in frame order, and their ratio
    (the issue's target: below 0.5), and what a perfect order would need (90 % of the
    wrong share: when most frames are wrong, no order can reach the target).

    OMP_NUM_THREADS=1 python benchmarks/review.py [--videos 30] [--frames 24]
    OMP_NUM_THREADS=1 python benchmarks/review.py --calibrate --videos 12  # the defaults
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import cpu_line as common_cpu_line

from masklet import VideoPredictor, build_model
from masklet.bundled import bundled_checkpoint, bundled_preset
from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.eval.metrics import region_similarity
from masklet.tracking.review import FrameReviewInput, ReviewConfig, review_input, score_frames

REPO = Path(__file__).resolve().parents[1]
DAVIS = REPO.parent / "shared" / "data" / "davis2016-train"
HELD_OUT_DAVIS = ["kite-surf", "paragliding-launch", "soapbox"]
FIRST_EVAL_SEED = 5_000_000
FIRST_CALIBRATION_SEED = 7_000_000
FIND = 0.9  # share of the wrong frames the annotator must find
WRONG_J = 0.5


@dataclass
class Track:
    """One tracked object: its scorer inputs per frame [T] (frame 0 prompted) and J [T]."""

    inputs: list[FrameReviewInput]
    j: np.ndarray


def cpu_line() -> str:
    return (f"{common_cpu_line()}; torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}")


def track_video(predictor: VideoPredictor, frames, gt: np.ndarray) -> list[Track]:
    """Track every object of `gt` ([T, H, W] ids) from its frame-0 mask; one Track each."""
    ids = [int(i) for i in np.unique(gt[0]) if i != 0]
    state = predictor.init_state(frames)
    for obj_id in ids:
        predictor.add_new_mask(state, 0, obj_id, gt[0] == obj_id)
    inputs: dict[int, list] = {i: [] for i in ids}
    j: dict[int, list] = {i: [] for i in ids}
    for frame, obj_ids, logits in predictor.propagate_in_video(state):
        signals = predictor.frame_signals(state, frame)
        for obj_id, mask in zip(obj_ids, (logits[:, 0] > 0).cpu().numpy()):
            s = signals[obj_id]
            inputs[obj_id].append(review_input(mask, s.object_score, s.iou, s.motion,
                                               prompted=frame == 0))
            j[obj_id].append(region_similarity(gt[frame] == obj_id, mask))
    return [Track(inputs[i], np.array(j[i])) for i in ids]


def synthetic(first_seed: int, count: int, num_frames: int, motion: float = 1.0):
    cfg = SyntheticVideoConfig(num_frames=num_frames, height=256, width=256, motion=motion)
    for i in range(count):
        clip = generate_video(first_seed + i, cfg)
        yield list(clip.frames), clip.masks


def davis(max_frames: int | None):
    for seq in HELD_OUT_DAVIS:
        jpgs = sorted((DAVIS / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:max_frames]
        pngs = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))[:max_frames]
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in jpgs]
        gt = np.stack([(np.asarray(Image.open(p)) > 0).astype(np.uint8) for p in pngs])
        yield frames, gt


def collect(predictor: VideoPredictor, videos) -> list[Track]:
    tracks = []
    with torch.inference_mode():
        for frames, gt in videos:
            tracks += track_video(predictor, frames, gt)
    return tracks


@dataclass
class Result:
    frames: int
    wrong: int
    flagged: int
    precision: float
    recall: float
    by_score: float  # share of object-frames looked at to find FIND of the wrong ones
    by_frame: float
    floor: float  # the best any order can do: FIND of the wrong frames, all first

    @property
    def ratio(self) -> float:
        return self.by_score / self.by_frame if self.by_frame else float("nan")


def _looked_at(wrong_in_order: np.ndarray) -> float:
    """Share of the walk needed to find FIND of the wrong entries (walk order given)."""
    need = int(np.ceil(FIND * wrong_in_order.sum()))
    if need == 0:
        return 0.0
    return float(np.searchsorted(np.cumsum(wrong_in_order), need) + 1) / len(wrong_in_order)


def measure(tracks: list[Track], config: ReviewConfig) -> Result:
    """Precision, recall and the two walks over all tracked object-frames of `tracks`."""
    scores, flags, wrong = [], [], []
    for t in tracks:
        reviews = score_frames(t.inputs, config)[1:]  # frame 0 is the prompt
        scores += [r.score for r in reviews]
        flags += [r.flagged for r in reviews]
        wrong += list(t.j[1:] < WRONG_J)
    scores, flags, wrong = np.array(scores), np.array(flags), np.array(wrong)
    # Flags first by score, then the unflagged by score; ties stay in frame order.
    order = np.lexsort((np.arange(len(scores)), -scores, ~flags))
    hits = int((flags & wrong).sum())
    return Result(len(wrong), int(wrong.sum()), int(flags.sum()),
                  hits / flags.sum() if flags.sum() else float("nan"),
                  hits / wrong.sum() if wrong.sum() else float("nan"),
                  _looked_at(wrong[order]), _looked_at(wrong),
                  _looked_at(np.sort(wrong)[::-1]))


def report(name: str, tracks: list[Track], config: ReviewConfig, seconds: float) -> None:
    r = measure(tracks, config)
    print(f"\n{name}: {len(tracks)} objects, {r.frames} tracked object-frames, "
          f"{r.wrong} wrong (J < {WRONG_J}) = {r.wrong / max(r.frames, 1):.1%}; "
          f"tracked in {seconds:.0f} s")
    print(f"  flags: {r.flagged} ({r.flagged / max(r.frames, 1):.1%} of object-frames), "
          f"precision {r.precision:.3f}, recall {r.recall:.3f}")
    print(f"  to find {FIND:.0%} of the wrong frames: score order {r.by_score:.1%} of "
          f"object-frames, frame order {r.by_frame:.1%}; ratio {r.ratio:.2f} "
          f"(target < 0.5: {'met' if r.ratio < 0.5 else 'NOT met'}); a perfect order "
          f"needs {r.floor:.1%} (ratio {r.floor / r.by_frame:.2f})")


SPEEDS = (1.0, 0.25)  # SyntheticVideoConfig.motion: the default, and slow (DAVIS-like)
GRID = {
    "iou_high": (0.6, 0.75, 0.9), "iou_low": (0.1, 0.25),
    "presence_high": (3.0, 4.0), "presence_low": (0.0, 1.5),
    "carry": (0.0, 0.5, 0.8, 0.95), "w_area": (0.3, 0.6), "w_jump": (0.0, 0.4),
    "w_presence": (0.5, 1.0), "w_iou": (0.6, 1.0),
}


NEAR_BEST = 0.002  # walk ratios this close to the best count as ties


def calibrate(sets: list[list[Track]]) -> ReviewConfig:
    """Grid search on calibration videos: the walks in score order that need the fewest
    frames next to frame order (mean ratio over `sets`); among those within `NEAR_BEST` of
    the best, the first that gives every reason a weight (none dropped on this data
    alone); then the threshold of best mean F1 of the flags. Returns the chosen config."""
    ranked = []
    for values in itertools.product(*GRID.values()):
        config = ReviewConfig(**dict(zip(GRID, values)))
        ranked.append((float(np.mean([measure(t, config).ratio for t in sets])), config))
    ranked.sort(key=lambda x: x[0])
    for ratio, config in ranked[:5]:
        print(f"walk ratio {ratio:.4f}: " + ", ".join(f"{k}={getattr(config, k)}" for k in GRID))
    near = [c for r, c in ranked if r <= ranked[0][0] + NEAR_BEST]
    best = next((c for c in near if min(c.w_presence, c.w_iou, c.w_area, c.w_jump) > 0),
                near[0])
    print("chosen: " + ", ".join(f"{k}={getattr(best, k)}" for k in GRID))
    scored = []
    for threshold in np.arange(0.3, 0.96, 0.05):
        results = [measure(t, replace(best, threshold=float(threshold))) for t in sets]
        f1 = float(np.mean([2 * r.precision * r.recall / (r.precision + r.recall)
                            for r in results]))
        scored.append((f1, round(float(threshold), 2)))
        print(f"  threshold {threshold:.2f}: mean F1 {f1:.3f} (precision, recall: "
              + "; ".join(f"{r.precision:.3f}, {r.recall:.3f}" for r in results) + ")")
    chosen = replace(best, threshold=max(scored)[1])
    print(f"chosen threshold {chosen.threshold}; equals the defaults: {chosen == ReviewConfig()}")
    return chosen


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=30, help="synthetic videos per speed")
    p.add_argument("--frames", type=int, default=24, help="frames per synthetic video")
    p.add_argument("--davis-frames", type=int, default=None,
                   help="first frames of each DAVIS sequence (default: all)")
    p.add_argument("--calibrate", action="store_true",
                   help="grid-search the defaults on the calibration seeds instead")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    model = build_model(bundled_preset(), checkpoint=bundled_checkpoint())
    predictor = VideoPredictor(model, progress=False)
    print(cpu_line())
    print(f"model {model.config.name} (bundled); review defaults: {ReviewConfig()}")
    if args.calibrate:
        start = time.perf_counter()
        sets = [collect(predictor, synthetic(FIRST_CALIBRATION_SEED, args.videos, args.frames,
                                             speed)) for speed in SPEEDS]
        print(f"calibration videos tracked in {time.perf_counter() - start:.0f} s")
        calibrate(sets)
        return
    config = ReviewConfig()
    for speed in SPEEDS:
        start = time.perf_counter()
        tracks = collect(predictor, synthetic(FIRST_EVAL_SEED, args.videos, args.frames, speed))
        report(f"held-out synthetic videos ({args.videos} x {args.frames} frames, 256 px, "
               f"motion {speed:g}, seeds {FIRST_EVAL_SEED}+)", tracks, config,
               time.perf_counter() - start)
    if not DAVIS.is_dir():
        sys.exit(f"DAVIS sequences not found at {DAVIS}; skipped the real-video part")
    start = time.perf_counter()
    tracks = collect(predictor, davis(args.davis_frames))
    report(f"held-out DAVIS 2016 sequences {HELD_OUT_DAVIS}", tracks, config,
           time.perf_counter() - start)


if __name__ == "__main__":
    main()
