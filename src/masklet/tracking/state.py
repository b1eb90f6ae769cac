"""Typed per-object tracking state: prompts, per-frame outputs and the memory they hold."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from masklet.tracking.motion import MotionState


@dataclass
class PointPrompt:
    """Clicks (and box corners) of one object on one frame, in model-input pixels.

    Attributes:
        coords: [1, N, 2] float (x, y) scaled to the model's input size.
        labels: [1, N] int32 (1 positive, 0 negative, 2/3 box corners).
    """

    coords: torch.Tensor
    labels: torch.Tensor

    @property
    def num_points(self) -> int:
        return self.labels.shape[1]

    def extended(self, coords: torch.Tensor, labels: torch.Tensor) -> PointPrompt:
        """These points followed by more points (a refinement click)."""
        return PointPrompt(torch.cat([self.coords, coords], 1), torch.cat([self.labels, labels], 1))


@dataclass
class FrameOutput:
    """One object's result on one frame: what is shown and what is remembered.

    Attributes:
        pred_masks: [1, 1, h, w] low-res mask logits (h = w = image_size / 4).
        obj_ptr: [1, C] object pointer (C = 256).
        object_score_logits: [1, 1] presence logit.
        maskmem_features: [1, mem_dim, H, W] memory (bf16, as the official code stores
            it), or None until the memory encoder has run on this output.
        iou_score: [1] predicted IoU of the chosen mask (None where not recorded).
        motion_score: IoU of the chosen mask's box with the motion filter's predicted box
            (motion-aware tracking, once the filter scores masks; else None).
        motion: the object's motion filter after this frame (motion-aware tracking only).
        candidate: which of the decoder's candidate masks was chosen (motion-aware
            tracking only; 0 when it gave one mask).
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    iou_score: torch.Tensor | None = None
    motion_score: float | None = None
    motion: MotionState | None = None
    candidate: int | None = None

    @property
    def has_memory(self) -> bool:
        return self.maskmem_features is not None


@dataclass
class ObjectState:
    """Everything known about one tracked object in one video.

    Invariants:
        - a frame is in at most one of ``cond_outputs`` / ``non_cond_outputs``;
        - every frame in ``cond_outputs`` had a prompt (points or mask) when it was added;
        - ``pending_*`` hold outputs of prompts not yet turned into memory; they move to
          ``cond_outputs`` / ``non_cond_outputs`` when tracking starts (`commit_pending`).
    """

    obj_id: int
    point_inputs: dict[int, PointPrompt] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # [1, 1, S, S]
    cond_outputs: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond_outputs: dict[int, FrameOutput] = field(default_factory=dict)
    pending_cond: dict[int, FrameOutput] = field(default_factory=dict)
    pending_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    # frame -> whether it was last tracked in reverse (decides a correction's direction)
    frames_tracked: dict[int, bool] = field(default_factory=dict)

    def current_output(self, frame_idx: int, is_cond: bool) -> FrameOutput | None:
        """The newest output on a frame: the pending one of that kind, then the stored ones."""
        pending = self.pending_cond if is_cond else self.pending_non_cond
        for store in (pending, self.cond_outputs, self.non_cond_outputs):
            if frame_idx in store:
                return store[frame_idx]
        return None

    def input_frames(self) -> set[int]:
        """Frames on which this object has a prompt."""
        return set(self.point_inputs) | set(self.mask_inputs)

    def has_prompts(self) -> bool:
        return bool(self.cond_outputs or self.pending_cond)

    def clear_frame_prompts(self, frame_idx: int) -> None:
        """Drop the prompts of one frame, demoting its output to an ordinary tracked frame."""
        self.point_inputs.pop(frame_idx, None)
        self.mask_inputs.pop(frame_idx, None)
        self.pending_cond.pop(frame_idx, None)
        self.pending_non_cond.pop(frame_idx, None)
        out = self.cond_outputs.pop(frame_idx, None)
        if out is not None:
            self.non_cond_outputs[frame_idx] = out
            self.frames_tracked.pop(frame_idx, None)

    def clear_results(self) -> None:
        for store in (self.point_inputs, self.mask_inputs, self.cond_outputs,
                      self.non_cond_outputs, self.pending_cond, self.pending_non_cond,
                      self.frames_tracked):
            store.clear()
