"""Tracking several objects on one frame in one batched pass.

The official predictor tracks objects one after another. Objects of the same frame share
the frame's features, so here their memory attention runs as one batch: the frame goes
through the first self-attention layer once for all of them (a quarter of one object's
self-attention work saved per extra object) and every other layer is one call. Each
object still reads only its own memory, and gets the masks of tracking it alone (bit for
bit in the tests: memory attention treats the rows of a batch independently, and the
decoder and memory encoder run per object, see `_track_batch`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from masklet.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from masklet.postprocess import fill_holes
from masklet.tracking.memory_bank import MemoryInputs, gather_memory
from masklet.tracking.motion import FRESH, MotionChoice, MotionConfig, MotionState, state_before
from masklet.tracking.motion_heads import decode_heads
from masklet.tracking.state import FrameOutput, ObjectState
from masklet.tracking.step import (
    HOLE_FILL_LOGIT,
    attend_memory,
    encode_memory,
    track_frame,
)


def track_objects(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    objects: Sequence[ObjectState],
    num_frames: int | None,
    reverse: bool,
    *,
    fill_hole_area: int,
    motion: MotionConfig | None = None,
) -> list[FrameOutput]:
    """Track objects without a prompt on this frame from their memories.

    Args:
        feats: the frame's features, batch 1.
        objects: objects with at least one prompted frame in memory.
        motion: track motion-aware (SAMURAI); each object continues its own filter.
    Returns:
        one output per object, in the order given, each with its new memory.
    """
    if feats.batch_size != 1:
        raise ValueError(f"expected the features of one frame, got batch {feats.batch_size}")
    priors = [state_before((obj.cond_outputs, obj.non_cond_outputs), frame_idx, reverse)
              if motion is not None else FRESH for obj in objects]
    if model.num_maskmem == 0:  # no memory to attend to: nothing to batch
        return [track_frame(model, feats, frame_idx, False, None, None, obj.cond_outputs,
                            obj.non_cond_outputs, num_frames, reverse, run_mem_encoder=True,
                            fill_hole_area=fill_hole_area, motion=motion, motion_prior=prior)
                for obj, prior in zip(objects, priors)]
    device = feats.image_embed.device
    memories = [gather_memory(model, frame_idx, obj.cond_outputs, obj.non_cond_outputs,
                              num_frames, reverse, 1, device, motion) for obj in objects]
    # Objects whose memories have the same layout (token count, pointer count) batch.
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, mem in enumerate(memories):
        groups[(mem.memory.shape[0], mem.num_obj_ptr_tokens)].append(i)
    outputs: list[FrameOutput | None] = [None] * len(objects)
    for members in groups.values():
        batch = _stack([memories[i] for i in members])
        track = _MotionTrack(motion, [priors[i] for i in members], reverse)
        for i, out in zip(members, _track_batch(model, feats, batch, fill_hole_area, track)):
            outputs[i] = out
    return outputs  # type: ignore[return-value]


def _stack(memories: list[MemoryInputs]) -> MemoryInputs:
    """B single-object memories of one layout -> one [M, B, mem_dim] batch."""
    if len(memories) == 1:
        return memories[0]
    return MemoryInputs(torch.cat([m.memory for m in memories], dim=1),
                        torch.cat([m.memory_pos for m in memories], dim=1),
                        memories[0].num_obj_ptr_tokens)


@dataclass
class _MotionTrack:
    """Motion-aware tracking of a batch: the options (None: off), each member's filter
    before this frame, and the pass's direction."""

    config: MotionConfig | None
    priors: list[MotionState]
    reverse: bool


def _decode_one(
    model: SAM2Model, pix: torch.Tensor, high_res, multimask: bool, track: _MotionTrack, i: int
) -> tuple[SamHeadOutput, torch.Tensor, MotionChoice | None]:
    """Object ``i``'s heads: its masks, the chosen mask's predicted IoU [1] and, with the
    motion option, its choice."""
    if track.config is None:
        sam = model.forward_sam_heads(pix, high_res, points=None, mask_inputs=None,
                                      multimask_output=multimask)
        return sam, sam.ious.max(dim=-1).values, None
    sam, choice = decode_heads(model, pix, high_res, None, None, multimask, track.config,
                               track.priors[i], track.reverse)
    return sam, sam.ious[:, choice.index], choice


def _track_batch(model: SAM2Model, feats: ImageFeatures, mem: MemoryInputs,
                 fill_hole_area: int, track: _MotionTrack) -> list[FrameOutput]:
    """Decode and remember B objects of one memory layout on the frame.

    Memory attention runs as one batch (bit for bit what each object gets alone: its
    kernels treat batch rows independently). The decoder and memory encoder, under 5 % of
    an object's work, run per object: their batched kernels round differently from
    batch-1 ones, and per object every object's masks stay exactly what tracking it alone
    gives, whichever other objects are tracked.
    """
    pix = attend_memory(model, feats, mem)
    high_res = feats.high_res_feats or None
    multimask = model.use_multimask(False, 0)
    outputs = []
    for i in range(pix.shape[0]):
        sam, iou, choice = _decode_one(model, pix[i : i + 1], high_res, multimask, track, i)
        memory = encode_memory(model, feats, sam.high_res_masks, sam.object_score_logits,
                               is_mask_from_pts=False)
        shown = sam.low_res_masks
        if fill_hole_area > 0:
            shown = fill_holes(shown, fill_hole_area, fill_value=HOLE_FILL_LOGIT)
        out = FrameOutput(shown, sam.obj_ptr, sam.object_score_logits, memory, iou)
        if choice is not None:
            out.motion_score, out.motion, out.candidate = (choice.motion_score, choice.state,
                                                           choice.index)
        outputs.append(out)
    return outputs
