"""Which tracked frames a frame remembers under motion-aware tracking (SAMURAI's rule).

SAM 2 attends to the ``num_maskmem - 1`` frames just before the current one. SAMURAI
attends instead to the most recent tracked frames that look *reliable*: predicted IoU
above ``memory_iou``, object-score logit above ``memory_object_score`` and, when the
filter scored the frame, motion IoU above ``memory_motion``; the adjacent frame is always
included (it is the latest evidence, reliable or not). The memories are ranked, the
nearest getting the temporal position of the adjacent frame.

Two details follow SAMURAI exactly, for parity: the scan never looks at the first two
frames of the video (the last two when tracking backwards), and prompted frames are not
candidates (they are always in memory anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

from masklet.tracking.motion import MotionConfig
from masklet.tracking.state import FrameOutput

# SAMURAI's scan stops this many frames short of the video's start (its loop ends at 2).
SCAN_MARGIN = 2


def is_reliable(out: FrameOutput, config: MotionConfig) -> bool:
    """Whether a tracked frame's output passes SAMURAI's memory-bank thresholds."""
    if out.iou_score is None:
        return False
    if not float(out.iou_score) > config.memory_iou:
        return False
    if not float(out.object_score_logits) > config.memory_object_score:
        return False
    return out.motion_score is None or out.motion_score > config.memory_motion


def _scan(frame_idx: int, reverse: bool, num_frames: int | None):
    """Frames behind ``frame_idx`` in the pass's direction, nearest first."""
    if not reverse:
        return range(frame_idx - 1, SCAN_MARGIN - 1, -1)
    if num_frames is None:
        raise ValueError("tracking backwards needs the video's length")
    return range(frame_idx + 1, num_frames - SCAN_MARGIN)


def reliable_frames(frame_idx: int, non_cond: Mapping[int, FrameOutput], config: MotionConfig,
                    count: int, reverse: bool, num_frames: int | None) -> list[int]:
    """The ``count`` nearest reliable tracked frames behind ``frame_idx``, nearest first."""
    found: list[int] = []
    if count <= 0:
        return found
    for t in _scan(frame_idx, reverse, num_frames):
        out = non_cond.get(t)
        if out is not None and is_reliable(out, config):
            found.append(t)
            if len(found) == count:
                break
    return found


def motion_memory_frames(frame_idx: int, non_cond: Mapping[int, FrameOutput],
                         config: MotionConfig, num_maskmem: int, reverse: bool,
                         num_frames: int | None) -> list[tuple[int, int]]:
    """(t_pos, frame) pairs of the tracked memories a frame attends to, oldest first.

    Like `memory_bank.recent_frame_indices`, the nearest memory gets ``t_pos =
    num_maskmem - 1``; here positions are ranks, not distances.
    """
    slots = num_maskmem - 1
    if slots <= 0:
        return []
    chosen = reliable_frames(frame_idx, non_cond, config, slots, reverse, num_frames)
    adjacent = frame_idx + 1 if reverse else frame_idx - 1
    if adjacent not in chosen:
        chosen = [adjacent] + chosen[: slots - 1]
    # nearest first -> oldest first, ranked positions ending at num_maskmem - 1
    chosen.reverse()
    return [(num_maskmem - len(chosen) + i, t) for i, t in enumerate(chosen)]


def frames_to_keep(frame_idx: int, non_cond: Mapping[int, FrameOutput], config: MotionConfig,
                   num_maskmem: int, num_frames: int | None) -> set[int]:
    """Tracked frames before ``frame_idx`` whose memories this or a later frame can read
    (a forward pass): the ``num_maskmem - 1`` nearest reliable ones and the adjacent one.
    A later frame reads reliable frames only, newest first, so older ones are never read.
    """
    keep = set(reliable_frames(frame_idx, non_cond, config, num_maskmem - 1, False, num_frames))
    keep.add(frame_idx - 1)
    return keep
