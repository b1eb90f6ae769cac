"""Per-frame quality signals of a tracked object, for review hints and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass

from masklet.tracking.state import FrameOutput


@dataclass(frozen=True)
class FrameSignals:
    """What the model said about one object on one frame.

    Attributes:
        object_score: presence logit (> 0: SAM 2 thinks the object is visible).
        iou: predicted IoU of the shown mask, or None where not recorded.
        motion: IoU of the shown mask's box with the motion filter's predicted box
            (motion-aware tracking, once its filter scores masks), else None. A low value
            on a confident mask suggests a jump to another object.
        candidate: which of the decoder's masks was shown (motion-aware tracking only).
    """

    object_score: float
    iou: float | None
    motion: float | None
    candidate: int | None


def signals_of(out: FrameOutput) -> FrameSignals:
    iou = None if out.iou_score is None else float(out.iou_score.flatten()[0])
    return FrameSignals(float(out.object_score_logits.flatten()[0]), iou, out.motion_score,
                        out.candidate)
