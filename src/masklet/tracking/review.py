"""Review hints: which tracked frames an annotator should look at first.

After tracking, an annotator scrubs every frame to find where a mask went wrong. The model
already says where it is unsure; this module turns what it says (plus how the mask moves)
into one "needs review" score per tracked frame and object, in [0, 1], and a flag.

How the score is combined (`ReviewScorer.step`): five reasons to doubt a frame, each a
number in [0, 1] that is 0 when the frame looks fine and 1 when the reason is at its full
strength:

    presence   the object-score logit is low (the model thinks the object is not there);
               ramps from 0 at `presence_high` to 1 at `presence_low`;
    iou        the decoder's predicted IoU is low; 0 at `iou_high`, 1 at `iou_low`;
    area       the mask's area moved away from the anchor (the area on the frame the
               object was last prompted on): |log(area / anchor)| from 0 at
               log(`area_ratio_low`) to 1 at log(`area_ratio_high`); an empty mask after a
               non-empty anchor counts 1;
    jump       the box centre moved from the previous frame by more than the object's size
               allows: distance / sqrt(previous box area), 0 at `jump_low`, 1 at
               `jump_high`; the box's size (sqrt of its area) growing or shrinking by a
               factor 1 + `jump_low` .. 1 + `jump_high` counts the same way;
    motion     (motion-aware tracking only) the mask's box agrees little with the motion
               filter's prediction: 0 at `motion_high`, 1 at `motion_low`.

The frame's raw doubt is a noisy-OR of the weighted reasons, ``1 - prod(1 - w_i * r_i)``:
any one strong reason is enough, two weak ones add up, and the result stays in [0, 1].
A track that goes wrong rarely comes back by itself, so doubt is carried forward: the
score is ``max(raw, carry * previous score)``, reset on a prompted frame (the annotator
made that mask; its score is 0). A frame is flagged when its score reaches `threshold`.

Calibration: the defaults were chosen with
``python benchmarks/review.py --calibrate --videos 12``, which tracks 12 synthetic videos of
24 frames at each of two motion speeds (`SyntheticVideoConfig.motion` 1 and 0.25) from
seeds 7,000,000 on (`masklet.data.synthetic`;
training uses seeds below 4,000, the benchmark's held-out videos start at 5,000,000) with
the bundled nano model from a first-frame mask prompt, marks each tracked object-frame
wrong when J < 0.5 against the ground truth, and grid-searches ramps, weights and carry
for the walk in score order that finds 90 % of the wrong frames soonest (relative to
scrubbing in frame order, averaged over the two speeds); among the settings within 0.002
of the best (the best ratio was 0.811, these 0.812) it keeps the first that gives every
reason a weight, so that none is dropped on synthetic data alone; the threshold is then
the one with the best mean F1 of the flags (0.55: precision 0.84 / 0.75, recall
0.94 / 0.91 at the two speeds). There, the predicted IoU separated wrong frames best, the
presence logit next (the nano model's logit stays positive on wrong frames, hence ramps
well above 0), and carrying doubt forward helped most. The motion ramp is not calibrated
(the benchmark tracks without motion). DAVIS and the held-out videos were not used.

Torch-free (numpy and the standard library) so that any front end can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels (inclusive)


@dataclass(frozen=True)
class ReviewConfig:
    """Ramps, weights and the flag threshold of the review score (see the module doc).

    Every ``*_low`` / ``*_high`` pair is where a reason is 1 and 0 (in the signal's own
    unit); weights scale each reason before the noisy-OR.
    """

    threshold: float = 0.55
    presence_low: float = 1.5
    presence_high: float = 4.0
    iou_low: float = 0.1
    iou_high: float = 0.75
    area_ratio_low: float = 1.5
    area_ratio_high: float = 4.0
    jump_low: float = 0.3
    jump_high: float = 1.0
    motion_low: float = 0.2
    motion_high: float = 0.6
    w_presence: float = 0.5
    w_iou: float = 1.0
    w_area: float = 0.3
    w_jump: float = 0.4
    w_motion: float = 0.6
    carry: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the review threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.carry <= 1.0:
            raise ValueError(f"carry must be in [0, 1], got {self.carry}")
        pairs = (("presence", self.presence_low, self.presence_high),
                 ("iou", self.iou_low, self.iou_high),
                 ("area_ratio", self.area_ratio_low, self.area_ratio_high),
                 ("jump", self.jump_low, self.jump_high),
                 ("motion", self.motion_low, self.motion_high))
        for name, low, high in pairs:
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"{name}_low must be below {name}_high (finite)")
        if self.area_ratio_low < 1.0:
            raise ValueError("area_ratio_low must be at least 1")
        for name in ("w_presence", "w_iou", "w_area", "w_jump", "w_motion"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FrameReviewInput:
    """What the scorer reads about one object on one frame.

    object_score: presence logit (> 0: the model thinks the object is visible).
    iou: predicted IoU of the shown mask, or None where not recorded.
    area: mask area in pixels.
    box: the mask's bounding box, or None for an empty mask.
    motion: motion-filter agreement (IoU of boxes) or None without motion-aware tracking.
    prompted: the annotator's own mask (a prompt) on this frame: never flagged, and the
        anchor the following frames are compared with.
    """

    object_score: float
    iou: float | None
    area: int
    box: Box | None
    motion: float | None = None
    prompted: bool = False


@dataclass(frozen=True)
class FrameReview:
    """The scorer's answer for one frame: the score in [0, 1], the flag and the reasons
    (name -> value in [0, 1], before weighting)."""

    score: float
    flagged: bool
    reasons: dict[str, float]


def mask_box(mask: np.ndarray) -> Box | None:
    """(x0, y0, x1, y1) of the True pixels of an [H, W] mask, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])


def review_input(mask: np.ndarray, object_score: float, iou: float | None,
                 motion: float | None = None, prompted: bool = False) -> FrameReviewInput:
    """The scorer's input for an [H, W] bool mask and the model's signals on its frame."""
    return FrameReviewInput(float(object_score), None if iou is None else float(iou),
                            int(np.count_nonzero(mask)), mask_box(mask),
                            None if motion is None else float(motion), prompted)


def _ramp(value: float, zero_at: float, one_at: float) -> float:
    """0 at `zero_at`, 1 at `one_at`, linear between and clipped (either direction)."""
    t = (value - zero_at) / (one_at - zero_at)
    return float(min(1.0, max(0.0, t)))


def _box_size(box: Box) -> float:
    """sqrt of the box area (inclusive pixel boxes: a one-pixel mask has size 1)."""
    return math.sqrt((box[2] - box[0] + 1) * (box[3] - box[1] + 1))


class ReviewScorer:
    """One object's review score, fed its frames one at a time in tracking order.

    Online, so the app can score each frame as a tracking job writes it; `score_frames`
    runs it over a whole list.
    """

    def __init__(self, config: ReviewConfig | None = None) -> None:
        self.config = config or ReviewConfig()
        self.anchor_area: int | None = None
        self.previous: FrameReviewInput | None = None
        self.last_score = 0.0

    def reasons(self, frame: FrameReviewInput) -> dict[str, float]:
        """Each reason to doubt `frame` in [0, 1] (see the module doc); absent signals
        are left out."""
        c = self.config
        out = {"presence": _ramp(frame.object_score, c.presence_high, c.presence_low)}
        if frame.iou is not None:
            out["iou"] = _ramp(frame.iou, c.iou_high, c.iou_low)
        if self.anchor_area:
            if frame.area == 0:
                out["area"] = 1.0
            else:
                change = abs(math.log(frame.area / self.anchor_area))
                out["area"] = _ramp(change, math.log(c.area_ratio_low),
                                    math.log(c.area_ratio_high))
        prev = self.previous.box if self.previous is not None else None
        if prev is not None and frame.box is not None:
            size = _box_size(prev)
            shift = math.hypot((frame.box[0] + frame.box[2] - prev[0] - prev[2]) / 2,
                               (frame.box[1] + frame.box[3] - prev[1] - prev[3]) / 2) / size
            growth = abs(math.log(_box_size(frame.box) / size))
            out["jump"] = max(_ramp(shift, c.jump_low, c.jump_high),
                              _ramp(growth, math.log1p(c.jump_low), math.log1p(c.jump_high)))
        if frame.motion is not None:
            out["motion"] = _ramp(frame.motion, c.motion_high, c.motion_low)
        return out

    def step(self, frame: FrameReviewInput) -> FrameReview:
        """Score the next frame (in tracking order) and remember it."""
        c = self.config
        if frame.prompted:
            self.anchor_area = frame.area or None
            self.previous, self.last_score = frame, 0.0
            return FrameReview(0.0, False, {})
        reasons = self.reasons(frame)
        if self.anchor_area is None and frame.area:
            self.anchor_area = frame.area  # no prompt seen: the first mask is the anchor
        weights = {"presence": c.w_presence, "iou": c.w_iou, "area": c.w_area,
                   "jump": c.w_jump, "motion": c.w_motion}
        keep = 1.0
        for name, value in reasons.items():
            keep *= 1.0 - weights[name] * value
        score = max(1.0 - keep, c.carry * self.last_score)
        self.previous, self.last_score = frame, score
        return FrameReview(score, score >= c.threshold, reasons)


class PassScorers:
    """One `ReviewScorer` per object over a tracking pass: `reset` when a new pass starts
    (scores run in tracking order), `step` for each tracked frame and object. Shared by
    the app's tracking jobs and `masklet video --review-csv`."""

    def __init__(self, config: ReviewConfig | None = None) -> None:
        self.config = config or ReviewConfig()
        self.scorers: dict[int, ReviewScorer] = {}

    def reset(self) -> None:
        self.scorers = {}

    def scorer(self, obj: int) -> ReviewScorer:
        return self.scorers.setdefault(obj, ReviewScorer(self.config))

    def step(self, obj: int, mask: np.ndarray, object_score: float, iou: float | None,
             motion: float | None, prompted: bool) -> tuple[FrameReviewInput, FrameReview]:
        """Score `obj`'s [H, W] bool mask on the next frame of the pass from the model's
        signals there: (the scorer's input, its answer)."""
        given = review_input(mask, object_score, iou, motion, prompted)
        return given, self.scorer(obj).step(given)


def score_frames(frames: Iterable[FrameReviewInput], config: ReviewConfig | None = None
                 ) -> list[FrameReview]:
    """Scores of one object's frames given in tracking order (see `ReviewScorer`)."""
    scorer = ReviewScorer(config)
    return [scorer.step(f) for f in frames]


def review_walk(scores: Sequence[float], flagged: Sequence[bool]) -> list[int]:
    """Indices of the flagged entries by descending score (ties: in the given order):
    the order a review walks them in."""
    picked = [i for i, f in enumerate(flagged) if f]
    return sorted(picked, key=lambda i: (-scores[i], i))
