"""Which memories a frame attends to, and how they are laid out for memory attention.

The rules follow SAM 2: every prompted ("conditioning") frame, optionally capped to the
temporally closest ones; the ``num_maskmem - 1`` frames just before the current one
(just after it when tracking backwards); and object pointers of prompted frames plus up
to ``max_obj_ptrs_in_encoder - 1`` recent frames, each with a temporal encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from masklet.modeling.position_encoding import sine_pe_1d
from masklet.tracking.motion import MotionConfig
from masklet.tracking.motion_memory import motion_memory_frames
from masklet.tracking.state import FrameOutput

Outputs = Mapping[int, FrameOutput]


@dataclass
class MemoryInputs:
    """Memory tokens for a batch of B objects.

    Attributes:
        memory: [M, B, mem_dim] spatial memories then object-pointer tokens.
        memory_pos: [M, B, mem_dim] their spatial + temporal position encodings.
        num_obj_ptr_tokens: how many trailing tokens are object pointers (no rotary enc).
    """

    memory: torch.Tensor
    memory_pos: torch.Tensor
    num_obj_ptr_tokens: int


def select_cond_frames(frame_idx: int, cond: Outputs, max_num: int) -> tuple[dict, dict]:
    """Split prompted frames into those attended to and the rest.

    With a cap, keep the closest prompted frame before, the closest at-or-after, then the
    temporally closest others.
    """
    if max_num == -1 or len(cond) <= max_num:
        return dict(cond), {}
    if max_num < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
    chosen: dict[int, FrameOutput] = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    after = min((t for t in cond if t >= frame_idx), default=None)
    for t in (before, after):
        if t is not None:
            chosen[t] = cond[t]
    rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_num - len(chosen)]:
        chosen[t] = cond[t]
    return chosen, {t: v for t, v in cond.items() if t not in chosen}


def recent_frame_indices(frame_idx: int, num_maskmem: int, stride: int, reverse: bool):
    """(t_pos, frame) pairs of the non-prompted memories, oldest (t_pos=1) first.

    The nearest one is always the adjacent frame; the others step by ``stride``.
    """
    pairs = []
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos  # frames away from the current one
        if t_rel == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        pairs.append((t_pos, prev))
    return pairs


def _spatial_memories(model, frame_idx, cond_sel, unselected, non_cond, reverse, device,
                      recent):
    entries = [(0, out) for out in cond_sel.values()]
    for t_pos, prev in recent:
        out = non_cond.get(prev) or unselected.get(prev)
        entries.append((t_pos, out))
    feats, pos = [], []
    pos_enc = memory_token_positions(model, device)  # [N, 1, mem_dim], same for every frame
    for t_pos, out in entries:
        if out is None or out.maskmem_features is None:
            continue
        f = out.maskmem_features.to(device)
        # A map [B, mem_dim, H, W], or perceiver latents [B, N, mem_dim] (EdgeTAM).
        feats.append(f.flatten(2).permute(2, 0, 1) if f.dim() == 4 else f.transpose(0, 1))
        p = pos_enc.expand(-1, f.shape[0], -1)
        pos.append(p + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1])
    return feats, pos


def memory_token_positions(model, device: torch.device) -> torch.Tensor:
    """[N, 1, mem_dim] position encodings of one stored memory's N tokens."""
    if model.spatial_perceiver is not None:
        return model.spatial_perceiver.token_positions(device, model.dtype).unsqueeze(1)
    return model.maskmem_pos_enc(device).flatten(2).permute(2, 0, 1)


def _pointer_entries(model, frame_idx, cond_sel, unselected, non_cond, num_frames, reverse):
    c = model.config
    max_ptrs = (
        min(num_frames, c.max_obj_ptrs_in_encoder) if num_frames else c.max_obj_ptrs_in_encoder
    )
    sign = -1 if reverse else 1
    cond_ptrs = cond_sel
    if not model.training and c.only_obj_ptrs_in_the_past_for_eval:
        cond_ptrs = {t: o for t, o in cond_sel.items()
                     if (t >= frame_idx if reverse else t <= frame_idx)}
    entries = [
        ((frame_idx - t) * sign if c.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t),
         out.obj_ptr)
        for t, out in cond_ptrs.items()
    ]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        out = non_cond.get(t) or unselected.get(t)
        if out is not None:
            entries.append((t_diff, out.obj_ptr))
    return entries, max_ptrs


def _pointer_tokens(model, entries, max_ptrs, batch, device):
    """Object pointers [P, B, C] -> tokens [P * C / mem_dim, B, mem_dim] with their encoding."""
    c = model.config
    positions, ptrs = zip(*entries)
    obj_ptrs = torch.stack(ptrs, dim=0)
    hidden, mem_dim = model.hidden_dim, model.mem_dim
    if c.add_tpos_enc_to_obj_ptrs:
        dim = hidden if c.proj_tpos_enc_in_obj_ptrs else mem_dim
        rel = torch.tensor(positions, device=device) / (max_ptrs - 1)
        obj_pos = model.obj_ptr_tpos_proj(sine_pe_1d(rel, dim))
        obj_pos = obj_pos.unsqueeze(1).expand(-1, batch, mem_dim)
    else:
        obj_pos = obj_ptrs.new_zeros(len(positions), batch, mem_dim)
    if mem_dim < hidden:
        # Each 256-d pointer becomes 4 tokens of the 64-d memory width.
        split = hidden // mem_dim
        obj_ptrs = obj_ptrs.reshape(-1, batch, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(split, dim=0)
    return obj_ptrs, obj_pos


def gather_memory(
    model,
    frame_idx: int,
    cond: Outputs,
    non_cond: Outputs,
    num_frames: int | None,
    reverse: bool,
    batch: int,
    device: torch.device,
    motion: MotionConfig | None = None,
) -> MemoryInputs:
    """Assemble the memory a non-initial frame attends to (spatial memories + pointers).

    Args:
        cond / non_cond: the object's prompted / tracked outputs by frame index.
        num_frames: video length (None for a live stream of unknown length).
        motion: motion-aware tracking's options: tracked memories are then chosen by
            `motion_memory_frames` (SAMURAI) instead of by recency.
    """
    if not cond:
        raise RuntimeError("tracking needs at least one prompted frame in memory")
    cond_sel, unselected = select_cond_frames(frame_idx, cond, model.config.max_cond_frames_in_attn)
    if motion is None:
        stride = 1 if model.training else model.config.memory_temporal_stride_for_eval
        recent = recent_frame_indices(frame_idx, model.num_maskmem, stride, reverse)
    else:
        recent = motion_memory_frames(frame_idx, non_cond, motion, model.num_maskmem, reverse,
                                      num_frames)
    feats, pos = _spatial_memories(model, frame_idx, cond_sel, unselected, non_cond, reverse,
                                   device, recent)
    num_ptr_tokens = 0
    if model.config.use_obj_ptrs_in_encoder:
        entries, max_ptrs = _pointer_entries(model, frame_idx, cond_sel, unselected, non_cond,
                                             num_frames, reverse)
        if entries:
            ptr_tokens, ptr_pos = _pointer_tokens(model, entries, max_ptrs, batch, device)
            feats.append(ptr_tokens)
            pos.append(ptr_pos)
            num_ptr_tokens = ptr_tokens.shape[0]
    # Stored memories are bf16 (as the official code keeps them); compute in the model's
    # dtype. The reference crashes here when only bf16 spatial memories are present.
    dtype = pos[0].dtype
    memory = torch.cat([f.to(dtype) for f in feats], dim=0)
    return MemoryInputs(memory, torch.cat(pos, dim=0), num_ptr_tokens)
