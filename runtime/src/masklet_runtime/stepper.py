"""The streaming tracker's per-frame work on the exported graphs, ported from masklet's
tracking.step / batched / stream_bank so that every step computes what masklet computes:

* a tracked frame: memory attention over the object's memories, the decoder (3
  candidates or 1, masklet's multimask rule), the memory encoder on the decoder's mask,
  then small holes of the shown mask filled;
* a prompted or corrected frame: decoded now (without memory on a prompted frame, with
  it on a tracked one), its memory encoded at `commit`, from the shown mask binarised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from masklet_runtime.bank import (
    FrameOutput,
    MemoryInputs,
    MemoryReader,
    ObjectState,
    PointPrompt,
    stack_memories,
)
from masklet_runtime.bf16 import to_bf16_bits
from masklet_runtime.postprocess import fill_holes, resize_bilinear_aa

# Logit written into filled holes of shown masks (masklet's video value).
HOLE_FILL_LOGIT = 0.1
# Earlier logits fed back with new clicks are clamped to this range (masklet's).
PREV_LOGIT_CLAMP = 32.0


@dataclass
class FrameFeatures:
    """The image encoder's outputs for one frame (batch 1): image_embed [1, C, H, W] (raw,
    without no_mem_embed), high_res_0 [1, 32, 4H, 4W], high_res_1 [1, 64, 2H, 2W],
    pos_enc [1, C, H, W]."""

    image_embed: np.ndarray
    high_res_0: np.ndarray
    high_res_1: np.ndarray
    pos_enc: np.ndarray

    @cached_property
    def sequence_first(self) -> tuple[np.ndarray, np.ndarray]:
        """(image_embed, pos_enc) as memory attention takes them, [HW, 1, C] each; made
        once per frame, though the frame goes to memory attention once per object."""
        c = self.image_embed.shape[1]
        return tuple(np.ascontiguousarray(x.reshape(1, c, -1).transpose(2, 0, 1))
                     for x in (self.image_embed, self.pos_enc))


@dataclass
class Prompt:
    """A prompt for one object on the current frame: exactly one of ``points`` (model
    pixels) / ``mask`` ([1, 1, S, S] float 0/1) is set."""

    obj_id: int
    points: PointPrompt | None
    mask: np.ndarray | None
    clear_old_points: bool = True


@dataclass
class _Decoded:
    """Decoder results for B objects: low [B, 1, h, w] (before hole filling), obj_ptr
    [B, C], score [B, 1] object-score logits, iou [B]."""

    low: np.ndarray
    obj_ptr: np.ndarray
    score: np.ndarray
    iou: np.ndarray


def _tile(x: np.ndarray, batch: int) -> np.ndarray:
    return x if batch == x.shape[0] else np.repeat(x, batch, axis=0)


class GraphStepper:
    """Decodes, corrects and remembers objects on the current frame with the graphs.

    Args:
        graphs: a loaded export (`masklet_runtime.graphs.Graphs`).
        num_frames: the video's length, or None for a live source (the pointer window).
        fill_hole_area: holes of at most this many low-res pixels are filled (0: off).
    """

    def __init__(self, graphs: Any, num_frames: int | None, fill_hole_area: int) -> None:
        self.graphs = graphs
        s = graphs.settings
        self.settings = s
        self.num_frames = num_frames
        self.fill_hole_area = fill_hole_area
        self.memory = MemoryReader(s, graphs.constants)
        self.num_maskmem = int(s["num_maskmem"])
        self.low_res = int(s["low_res_size"])
        self.no_mem_embed = graphs.constants["no_mem_embed"].reshape(1, -1, 1, 1)
        # On CPU, tracked objects go through the graphs one at a time (as masklet's
        # decoder does); accelerators batch them. In a batched memory attention
        # onnxruntime's products stream all objects' keys (28,736 x 256 floats each at
        # 1024 px) per slice of queries; one object's keys stay in the CPU's cache: the
        # attention products of 3 objects ran about 15 % faster so on a 2-core AVX2 CPU.
        self.batch_objects = not graphs.on_cpu("memory_attention")

    # ------------------------------------------------------------------ rules
    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """masklet's SAM2Model.use_multimask: 3 candidates for this prompt or 1."""
        s = self.settings
        return bool(s["multimask_output_in_sam"]
                    and (is_init_cond_frame or s["multimask_output_for_tracking"])
                    and s["multimask_min_pt_num"] <= num_points <= s["multimask_max_pt_num"])

    def encode_image(self, image: np.ndarray) -> FrameFeatures:
        """[1, 3, S, S] preprocessed frame -> its features."""
        out = self.graphs.run("image_encoder", image=image)
        return FrameFeatures(out["image_embed"], out["high_res_0"], out["high_res_1"],
                             out["pos_enc"])

    # --------------------------------------------------------------- graphs
    def _attend(self, feats: FrameFeatures, mem: MemoryInputs) -> np.ndarray:
        """Memory attention of the frame over B objects' memories -> [B, C, H, W]."""
        curr, curr_pos = feats.sequence_first  # batch 1: the graph widens it to B
        out = self.graphs.run(
            "memory_attention", curr=curr, curr_pos=curr_pos, memory=mem.memory,
            memory_pos=mem.memory_pos, num_obj_ptr_tokens=np.array(mem.num_obj_ptr_tokens))
        return out["pix_feat"]

    def _decode(self, pix: np.ndarray, feats: FrameFeatures, points: PointPrompt | None,
                mask_input: np.ndarray | None, multimask: bool) -> _Decoded:
        """Prompt encoder + mask decoder on B memory-conditioned maps [B, C, H, W]."""
        b, low = pix.shape[0], self.low_res
        if points is None:  # masklet's one padding point (0, 0) with label -1
            coords = np.zeros((b, 1, 2), dtype=np.float32)
            labels = -np.ones((b, 1), dtype=np.int64)
        else:
            coords, labels = points.coords, points.labels
        has_mask = mask_input is not None
        if mask_input is None:
            mask_input = np.zeros((b, 1, low, low), dtype=np.float32)
        elif mask_input.shape[-2:] != (low, low):
            mask_input = resize_bilinear_aa(mask_input, (low, low))
        out = self.graphs.run(
            "decoder", image_embed=pix, high_res_0=_tile(feats.high_res_0, b),
            high_res_1=_tile(feats.high_res_1, b), point_coords=coords, point_labels=labels,
            mask_input=mask_input, has_mask_input=np.array([float(has_mask)]))
        if multimask:
            best = out["multi_best"].astype(np.int64)
            rows = np.arange(b)
            return _Decoded(out["multi_masks"][rows, best][:, None], out["multi_obj_ptr"],
                            out["object_score_logits"], out["multi_ious"].max(axis=-1))
        return _Decoded(out["single_mask"], out["single_obj_ptr"], out["object_score_logits"],
                        out["single_iou"].max(axis=-1))

    def _mask_as_output(self, feats: FrameFeatures, mask: np.ndarray) -> _Decoded:
        out = self.graphs.run("mask_prompt", image_embed=feats.image_embed,
                              high_res_0=feats.high_res_0, high_res_1=feats.high_res_1,
                              mask=mask)
        return _Decoded(out["low_res_masks"], out["obj_ptr"], out["object_score_logits"],
                        out["ious"].max(axis=-1))

    def _encode_memory(self, feats: FrameFeatures, low: np.ndarray, score: np.ndarray,
                       from_points: bool) -> list[np.ndarray]:
        """B objects' new memories as bf16 bits [Tm, mem_dim] each.

        The graph makes masks non-overlapping over its batch when the model says so;
        masklet encodes each object alone, so then the objects go one at a time.
        """
        flag = np.array([float(from_points)])
        if self.settings["non_overlap_masks_for_mem_enc"] and low.shape[0] > 1:
            return [m for i in range(low.shape[0])
                    for m in self._encode_memory(feats, low[i:i + 1], score[i:i + 1],
                                                 from_points)]
        out = self.graphs.run("memory_encoder",
                              image_embed=_tile(feats.image_embed, low.shape[0]),
                              mask_logits=low, object_score_logits=score, is_mask_from_pts=flag)
        return list(to_bf16_bits(out["maskmem_features"]))

    def _shown(self, low: np.ndarray) -> np.ndarray:
        if self.fill_hole_area > 0:
            return fill_holes(low, self.fill_hole_area, fill_value=HOLE_FILL_LOGIT)
        return low

    # ---------------------------------------------------------------- steps
    def track(self, objects: Sequence[ObjectState], frame_idx: int, feats: FrameFeatures,
              reverse: bool = False) -> None:
        """Decode objects on a new frame from their memories, and remember the frame
        (``reverse``: reached tracking backwards, so it reads later frames' memories).

        Objects whose memories have one layout (token and pointer counts) run as one
        batch, as masklet batches them, except on CPU (see ``batch_objects``).
        """
        if self.num_maskmem == 0:
            groups = {(0, 0): list(range(len(objects)))}
            memories: list[MemoryInputs | None] = [None] * len(objects)
        else:
            memories = [self.memory.gather(frame_idx, obj, self.num_frames, reverse)
                        for obj in objects]
            groups = defaultdict(list)
            for i, mem in enumerate(memories):
                groups[mem.layout].append(i)
        if not self.batch_objects:
            groups = {i: [i] for members in groups.values() for i in members}
        for members in groups.values():
            if self.num_maskmem == 0:
                pix = _tile(feats.image_embed, len(members))
            else:
                pix = self._attend(feats, stack_memories([memories[i] for i in members]))
            dec = self._decode(pix, feats, None, None, self.use_multimask(False, 0))
            mems: list[np.ndarray | None] = [None] * len(members)
            if self.num_maskmem > 0:
                mems = self._encode_memory(feats, dec.low, dec.score, from_points=False)
            shown = self._shown(dec.low)
            for k, i in enumerate(members):
                objects[i].non_cond_outputs[frame_idx] = FrameOutput(
                    shown[k:k + 1], dec.obj_ptr[k:k + 1], dec.score[k:k + 1],
                    float(dec.iou[k]), mems[k])

    def _condition(self, feats: FrameFeatures, frame_idx: int, is_init: bool,
                   obj: ObjectState, reverse: bool) -> np.ndarray:
        """The frame's features fused with the object's memory: [1, C, H, W]."""
        if self.num_maskmem == 0:
            return feats.image_embed
        if is_init and self.settings["directly_add_no_mem_embed"]:
            return feats.image_embed + self.no_mem_embed
        if is_init:
            return self._attend(feats, self.memory.no_memory(1))
        return self._attend(feats, self.memory.gather(frame_idx, obj, self.num_frames, reverse))

    def apply_prompt(self, obj: ObjectState, frame_idx: int, feats: FrameFeatures,
                     prompt: Prompt, reverse: bool = False) -> None:
        """Decode an object's prompt on the current frame; its memory waits for `commit`.

        A frame where the object was tracked stays a tracked frame (a correction, decoded
        with memory, read as the frame was tracked: backwards when ``reverse``); otherwise
        it becomes a prompted frame decoded without memory.
        """
        is_init = frame_idx not in obj.non_cond_outputs
        store = obj.cond_outputs if is_init else obj.non_cond_outputs
        points = prompt.points
        if points is not None:
            old = obj.point_inputs.get(frame_idx)
            if old is not None and not prompt.clear_old_points:
                points = old.extended(points)
            obj.point_inputs[frame_idx] = points
        else:
            obj.point_inputs.pop(frame_idx, None)
        if prompt.mask is not None and self.settings["use_mask_input_as_output_without_sam"]:
            dec = self._mask_as_output(feats, prompt.mask)
        else:
            mask_input = prompt.mask
            if points is not None and frame_idx in store:
                mask_input = np.clip(store[frame_idx].pred_masks, -PREV_LOGIT_CLAMP,
                                     PREV_LOGIT_CLAMP)
            pix = self._condition(feats, frame_idx, is_init, obj, reverse)
            num_points = 0 if points is None else points.num_points
            dec = self._decode(pix, feats, points, mask_input,
                               self.use_multimask(is_init, num_points))
        store[frame_idx] = FrameOutput(self._shown(dec.low), dec.obj_ptr, dec.score,
                                       float(dec.iou[0]))

    def commit(self, objects: Iterable[ObjectState], frame_idx: int,
               feats: FrameFeatures | None) -> None:
        """Encode the memories of prompted / corrected outputs on ``frame_idx``, from the
        mask shown (binarised, as masklet's memory_of_prompted)."""
        for obj in objects:
            out = obj.output_at(frame_idx)
            if out is None or out.has_memory or self.num_maskmem == 0:
                continue
            assert feats is not None, "a decoded frame always has its features"
            out.memory = self._encode_memory(feats, out.pred_masks, out.object_score_logits,
                                             from_points=True)[0]
