"""Per-object tracking state and the memory bank's rules, ported from masklet's
tracking.state / memory_bank / stream_bank.

What a frame reads: every prompted ("conditioning") frame (optionally capped to the
temporally closest ones); the spatial memories of the ``num_maskmem - 1`` frames before
it (after it when tracking backwards: the adjacent one, then steps of
``memory_temporal_stride_for_eval``); the object pointers of prompted frames plus the
``max_obj_ptrs_in_encoder - 1`` frames before (after) it, each with a temporal encoding.
`forget` drops what no later step of the pass reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from masklet_runtime.bf16 import from_bf16_bits

_F32 = np.float32


@dataclass
class PointPrompt:
    """Clicks (and box corners) of one object on one frame, in model-input pixels.

    coords: [1, N, 2] float32 (x, y); labels: [1, N] int64 (1, 0, or 2/3 box corners).
    """

    coords: np.ndarray
    labels: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.labels.shape[1])

    def extended(self, more: PointPrompt) -> PointPrompt:
        """These points followed by more (a refinement click)."""
        return PointPrompt(np.concatenate([self.coords, more.coords], 1),
                           np.concatenate([self.labels, more.labels], 1))


@dataclass
class FrameOutput:
    """One object's result on one frame.

    pred_masks: [1, 1, h, w] shown low-res logits (h = w = image_size / 4);
    obj_ptr: [1, C]; object_score_logits: [1, 1]; iou: predicted IoU of the chosen mask;
    memory: [Tm, mem_dim] uint16 bfloat16 bits (as masklet stores memories in bf16), or
    None until encoded (or once no later frame reads it).
    """

    pred_masks: np.ndarray
    obj_ptr: np.ndarray
    object_score_logits: np.ndarray
    iou: float
    memory: np.ndarray | None = None

    @property
    def has_memory(self) -> bool:
        return self.memory is not None


@dataclass
class ObjectState:
    """One object's clicks on the current frame and its outputs by frame index (a frame
    is in at most one of ``cond_outputs`` (prompted) / ``non_cond_outputs`` (tracked))."""

    obj_id: int
    point_inputs: dict[int, PointPrompt] = field(default_factory=dict)
    cond_outputs: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond_outputs: dict[int, FrameOutput] = field(default_factory=dict)

    def output_at(self, frame_idx: int) -> FrameOutput | None:
        return self.cond_outputs.get(frame_idx) or self.non_cond_outputs.get(frame_idx)


@dataclass
class MemoryInputs:
    """Memory tokens of B objects: memory / memory_pos [M, B, mem_dim] (spatial memories,
    then ``num_obj_ptr_tokens`` object-pointer tokens)."""

    memory: np.ndarray
    memory_pos: np.ndarray
    num_obj_ptr_tokens: int

    @property
    def layout(self) -> tuple[int, int]:
        return self.memory.shape[0], self.num_obj_ptr_tokens


def stack_memories(memories: list[MemoryInputs]) -> MemoryInputs:
    """B single-object memories of one layout -> one batch [M, B, mem_dim]."""
    if len(memories) == 1:
        return memories[0]
    return MemoryInputs(np.concatenate([m.memory for m in memories], 1),
                        np.concatenate([m.memory_pos for m in memories], 1),
                        memories[0].num_obj_ptr_tokens)


def select_cond_frames(frame_idx: int, cond: Mapping[int, FrameOutput],
                       max_num: int) -> tuple[dict, dict]:
    """Prompted frames attended to, and the rest: with a cap, the closest before, the
    closest at-or-after, then the temporally closest others."""
    if max_num == -1 or len(cond) <= max_num:
        return dict(cond), {}
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


def recent_frame_indices(frame_idx: int, num_maskmem: int, stride: int,
                         reverse: bool = False) -> list[tuple[int, int]]:
    """(t_pos, frame) of the tracked memories read, oldest (t_pos = 1) first: the adjacent
    frame, then frames on a grid of ``stride`` (later frames when tracking backwards)."""
    pairs = []
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        if t_rel == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif reverse:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        else:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        pairs.append((t_pos, prev))
    return pairs


def sine_pe_1d(positions: np.ndarray, dim: int, temperature: float = 10000) -> np.ndarray:
    """[P] float32 positions -> [P, dim]: dim/2 sines then dim/2 cosines (masklet's)."""
    index = np.arange(dim // 2, dtype=_F32)
    divisors = np.power(_F32(temperature), (_F32(2) * (index // _F32(2)) / _F32(dim // 2)))
    angles = positions[:, None] / divisors.astype(_F32)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(_F32)


class MemoryReader:
    """Assembles what a frame attends to, from the export's settings and constants."""

    def __init__(self, settings: Mapping[str, Any], constants: Mapping[str, np.ndarray]) -> None:
        s = settings
        self.num_maskmem = int(s["num_maskmem"])
        self.hidden_dim, self.mem_dim = int(s["hidden_dim"]), int(s["mem_dim"])
        self.max_cond = int(s["max_cond_frames_in_attn"])
        self.stride = int(s["memory_temporal_stride_for_eval"])
        self.use_ptrs = bool(s["use_obj_ptrs_in_encoder"])
        self.max_ptrs = int(s["max_obj_ptrs_in_encoder"])
        self.add_tpos = bool(s["add_tpos_enc_to_obj_ptrs"])
        self.proj_tpos = bool(s["proj_tpos_enc_in_obj_ptrs"])
        self.signed_tpos = bool(s["use_signed_tpos_enc_to_obj_ptrs"])
        self.only_past_ptrs = bool(s["only_obj_ptrs_in_the_past_for_eval"])
        self.tpos_enc = constants["maskmem_tpos_enc"]  # [num_maskmem, mem_dim]
        self.token_pos = constants["maskmem_pos_enc"][:, None, :]  # [Tm, 1, mem_dim]
        self.no_mem_embed = constants["no_mem_embed"]
        self.no_mem_pos_enc = constants["no_mem_pos_enc"]
        self.ptr_proj_w = constants.get("obj_ptr_tpos_proj_weight")  # [mem_dim, C]
        self.ptr_proj_b = constants.get("obj_ptr_tpos_proj_bias")

    def pointer_window(self, num_frames: int | None) -> int:
        return min(num_frames, self.max_ptrs) if num_frames else self.max_ptrs

    def no_memory(self, batch: int) -> MemoryInputs:
        """The dummy memory of an initial frame when no_mem_embed is not added directly."""
        mem = np.broadcast_to(self.no_mem_embed, (1, batch, self.no_mem_embed.shape[-1]))
        pos = np.broadcast_to(self.no_mem_pos_enc, mem.shape)
        return MemoryInputs(np.ascontiguousarray(mem), np.ascontiguousarray(pos), 0)

    def gather(self, frame_idx: int, obj: ObjectState, num_frames: int | None,
               reverse: bool = False) -> MemoryInputs:
        """One object's memory for a frame it has no prompt on: [M, 1, mem_dim]
        (``reverse``: the frame is reached tracking backwards)."""
        cond, non_cond = obj.cond_outputs, obj.non_cond_outputs
        if not cond:
            raise RuntimeError("tracking needs at least one prompted frame in memory")
        cond_sel, unselected = select_cond_frames(frame_idx, cond, self.max_cond)
        recent = recent_frame_indices(frame_idx, self.num_maskmem, self.stride, reverse)
        feats, pos = self._spatial(cond_sel, unselected, non_cond, recent)
        num_ptr_tokens = 0
        if self.use_ptrs:
            entries = self._pointer_entries(frame_idx, cond_sel, unselected, non_cond, num_frames,
                                            reverse)
            if entries:
                tokens, tokens_pos = self._pointer_tokens(entries, self.pointer_window(num_frames))
                feats.append(tokens)
                pos.append(tokens_pos)
                num_ptr_tokens = tokens.shape[0]
        return MemoryInputs(np.concatenate(feats, 0), np.concatenate(pos, 0), num_ptr_tokens)

    def _spatial(self, cond_sel, unselected, non_cond, recent):
        entries = [(0, out) for out in cond_sel.values()]
        entries += [(t_pos, non_cond.get(prev) or unselected.get(prev)) for t_pos, prev in recent]
        feats, pos = [], []
        for t_pos, out in entries:
            if out is None or out.memory is None:
                continue
            feats.append(from_bf16_bits(out.memory)[:, None, :])
            pos.append(self.token_pos + self.tpos_enc[self.num_maskmem - t_pos - 1])
        return feats, pos

    def _pointer_entries(self, frame_idx, cond_sel, unselected, non_cond, num_frames, reverse):
        # "Past" and the sign of the temporal offset follow the direction of tracking.
        sign = -1 if reverse else 1
        cond_ptrs = cond_sel
        if self.only_past_ptrs:
            cond_ptrs = {t: o for t, o in cond_sel.items() if (t - frame_idx) * sign <= 0}
        entries = [((frame_idx - t) * sign if self.signed_tpos else abs(frame_idx - t),
                    out.obj_ptr) for t, out in cond_ptrs.items()]
        for t_diff in range(1, self.pointer_window(num_frames)):
            t = frame_idx - t_diff * sign
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = non_cond.get(t) or unselected.get(t)
            if out is not None:
                entries.append((t_diff, out.obj_ptr))
        return entries

    def _pointer_tokens(self, entries, max_ptrs: int) -> tuple[np.ndarray, np.ndarray]:
        """Pointers [P, 1, C] -> tokens [P * C / mem_dim, 1, mem_dim] and their encoding."""
        positions = np.array([p for p, _ in entries], dtype=np.int64)
        ptrs = np.stack([ptr for _, ptr in entries], 0).astype(_F32)  # [P, 1, C]
        count, mem = len(entries), self.mem_dim
        if self.add_tpos:
            dim = self.hidden_dim if self.proj_tpos else mem
            rel = positions.astype(_F32) / _F32(max_ptrs - 1)
            enc = sine_pe_1d(rel, dim)
            if self.proj_tpos:
                enc = enc @ self.ptr_proj_w.T + self.ptr_proj_b
            ptr_pos = np.broadcast_to(enc[:, None, :], (count, 1, mem)).astype(_F32)
        else:
            ptr_pos = np.zeros((count, 1, mem), dtype=_F32)
        if mem < self.hidden_dim:
            # Each C-wide pointer becomes C / mem_dim consecutive tokens of width mem_dim.
            split = self.hidden_dim // mem
            ptrs = ptrs.reshape(count, 1, split, mem).transpose(0, 2, 1, 3)
            ptrs = ptrs.reshape(count * split, 1, mem)
            ptr_pos = np.repeat(ptr_pos, split, axis=0)
        return np.ascontiguousarray(ptrs), np.ascontiguousarray(ptr_pos)

    def reach(self, frame_idx: int, num_frames: int | None,
              reverse: bool = False) -> tuple[int, int]:
        """How many frames back along the pass ``frame_idx`` reads: (spatial memories,
        object pointers). Frames later in the pass reach no further back."""
        recent = recent_frame_indices(frame_idx, self.num_maskmem, self.stride, reverse)
        memory_reach = max((abs(t - frame_idx) for _, t in recent), default=0)
        pointer_reach = memory_reach
        if self.use_ptrs:
            pointer_reach = max(memory_reach, self.pointer_window(num_frames) - 1)
        return memory_reach, pointer_reach

    def forget(self, objects: Iterable[ObjectState], frame_idx: int, num_frames: int | None,
               *, reverse: bool = False, keep: range = range(0)) -> None:
        """Drop the tracked outputs that neither ``frame_idx`` nor the frames after it in
        the pass (before it when ``reverse``) read; outputs still read for their object
        pointer only lose their spatial memory. Frames in ``keep`` are left alone."""
        memory_reach, pointer_reach = self.reach(frame_idx, num_frames, reverse)
        sign = -1 if reverse else 1
        for obj in objects:
            for t in list(obj.non_cond_outputs):
                behind = (frame_idx - t) * sign
                if behind <= memory_reach or t in keep:
                    continue
                if behind > pointer_reach:
                    del obj.non_cond_outputs[t]
                else:
                    obj.non_cond_outputs[t].memory = None
