"""Motion-aware tracking (SAMURAI): choose each frame's mask by predicted IoU *and* motion.

SAM 2 decodes three candidate masks per tracked frame and keeps the one with the highest
predicted IoU; among look-alikes, or after fast motion, that can be the wrong object.
SAMURAI (Yang et al., 2024) runs a Kalman filter on each object's box:

* while the filter is young (fewer than ``stable_frames`` confident frames) SAM 2's own
  choice is kept and only feeds the filter;
* once stable, every candidate is scored ``motion_weight * IoU(candidate box, predicted
  box) + (1 - motion_weight) * predicted IoU`` and the best is kept;
* a chosen mask whose predicted IoU falls below ``stable_iou`` restarts the filter.

It also changes which tracked frames enter the memory a frame attends to (see
`masklet.tracking.motion_memory`). The filter's state is per object and per frame
(`MotionState` on each `FrameOutput`), so objects, streams and reverse passes each carry
their own; nothing is kept on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from masklet.tracking import kalman
from masklet.tracking.kalman import EMPTY_BOX, BoxGaussian


@dataclass(frozen=True)
class MotionConfig:
    """SAMURAI's parameters; the defaults are its published ones (configs/samurai/*.yaml).

    Attributes:
        stable_frames: confident frames the filter needs before motion scores the masks.
        stable_iou: a chosen mask with a predicted IoU below this restarts the filter.
        motion_weight: weight of the motion IoU in the candidate score (SAMURAI's
            ``kf_score_weight``; its configs use 0.25).
        memory_iou: a tracked frame enters the memory bank only with a predicted IoU above
            this ...
        memory_object_score: ... an object-score logit above this ...
        memory_motion: ... and, once the filter scores masks, a motion IoU above this.
        present_logit: the object counts as present when its score logit is above this
            (SAMURAI's ``min_obj_score_logits``; SAM 2 uses 0).
    """

    stable_frames: int = 15
    stable_iou: float = 0.3
    motion_weight: float = 0.25
    memory_iou: float = 0.5
    memory_object_score: float = 0.0
    memory_motion: float = 0.0
    present_logit: float = -1.0

    def __post_init__(self) -> None:
        if self.stable_frames < 1:
            raise ValueError(f"stable_frames must be >= 1, got {self.stable_frames}")
        if not 0.0 <= self.motion_weight <= 1.0:
            raise ValueError(f"motion_weight must be in [0, 1], got {self.motion_weight}")


def resolve_motion(motion: MotionConfig | bool | None) -> MotionConfig | None:
    """A predictor's ``motion`` argument: True means SAMURAI's defaults, False/None off."""
    if motion is None or motion is False:
        return None
    if motion is True:
        return MotionConfig()
    if isinstance(motion, MotionConfig):
        return motion
    raise TypeError(f"motion must be a MotionConfig or a bool, got {type(motion).__name__}")


@dataclass(frozen=True)
class MotionState:
    """One object's filter after one frame.

    Attributes:
        belief: the box filter, or None before it is started.
        stable_frames: confident frames in a row since the filter (re)started; 0 makes the
            next multi-candidate frame restart it.
        reverse: the direction of the pass that produced it; None for a prompted frame
            (valid in both directions). A pass never continues a state of the other
            direction: velocities would point the wrong way.
    """

    belief: BoxGaussian | None = None
    stable_frames: int = 0
    reverse: bool | None = None


FRESH = MotionState()


@dataclass(frozen=True)
class MotionChoice:
    """The candidate chosen on one frame and what it did to the filter.

    Attributes:
        index: the chosen candidate (0 when the decoder gave one mask).
        motion_score: IoU of the chosen mask's box with the predicted box, float32-rounded
            as SAMURAI computes it; None while the filter does not score masks.
        state: the filter after this frame.
    """

    index: int
    motion_score: float | None
    state: MotionState


def mask_box(mask_logits: torch.Tensor) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of ``mask_logits > 0`` ([S, S]); EMPTY_BOX if none."""
    fg = mask_logits > 0
    cols = torch.nonzero(fg.any(dim=0)).flatten()
    if cols.numel() == 0:
        return EMPTY_BOX
    rows = torch.nonzero(fg.any(dim=1)).flatten()
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


def choose_candidate(config: MotionConfig, state: MotionState, high_res_multimasks: torch.Tensor,
                     ious: torch.Tensor, reverse: bool | None) -> MotionChoice:
    """Pick one object's mask among its candidates and advance its filter.

    Args:
        state: the filter after the previous frame of this pass (or `FRESH`).
        high_res_multimasks: [M, S, S] candidate logits at the model's input size.
        ious: [M] their predicted IoUs.
        reverse: the pass's direction, recorded in the new state (None for a prompt).
    """
    if ious.shape[0] == 1:  # a single mask: nothing to choose, the filter waits
        return MotionChoice(0, None, state)
    if state.belief is None or state.stable_frames == 0:
        best = int(torch.argmax(ious))
        belief = kalman.initiate(mask_box(high_res_multimasks[best]))
        return MotionChoice(best, None, MotionState(belief, state.stable_frames + 1, reverse))
    predicted = kalman.predict(state.belief)
    if state.stable_frames < config.stable_frames:
        best = int(torch.argmax(ious))
        if bool(ious[best] > config.stable_iou):
            belief = kalman.update(predicted, mask_box(high_res_multimasks[best]))
            return MotionChoice(best, None,
                                MotionState(belief, state.stable_frames + 1, reverse))
        return MotionChoice(best, None, MotionState(predicted, 0, reverse))
    boxes = [mask_box(m) for m in high_res_multimasks]
    target = predicted.box_xyxy()
    # float32, like the predicted IoUs it is mixed with (SAMURAI's rounding, for parity).
    motion = torch.tensor([kalman.box_iou(target, b) for b in boxes], dtype=torch.float32,
                          device=ious.device)
    scores = config.motion_weight * motion + (1 - config.motion_weight) * ious
    best = int(torch.argmax(scores))
    score = float(motion[best])
    if bool(ious[best] < config.stable_iou):
        return MotionChoice(best, score, MotionState(predicted, 0, reverse))
    belief = kalman.update(predicted, boxes[best])
    return MotionChoice(best, score, MotionState(belief, state.stable_frames, reverse))


def state_before(outputs: tuple, frame_idx: int, reverse: bool) -> MotionState:
    """The filter a pass continues on ``frame_idx``: the adjacent frame's, behind it in the
    pass's direction, if that frame has one made in the same direction (or by a prompt);
    otherwise a fresh filter (the start of a pass, or a change of direction).

    Args:
        outputs: the object's output stores to look in (e.g. prompted, then tracked).
    """
    prev = frame_idx + 1 if reverse else frame_idx - 1
    for store in outputs:
        out = store.get(prev)
        if out is not None:
            state = getattr(out, "motion", None)
            if state is not None and state.reverse in (None, reverse):
                return state
            return FRESH
    return FRESH


def prompt_prior(current) -> MotionState:
    """The filter a prompt on a frame starts from: the one of the frame's earlier prompt
    (refining it, as SAMURAI keeps its filter across clicks), else a fresh one. A prompt
    on a tracked frame (a correction) restarts the filter from the corrected mask.

    Args:
        current: the object's newest `FrameOutput` on the frame, or None.
    """
    state = getattr(current, "motion", None)
    if state is not None and state.reverse is None:
        return state
    return FRESH
