"""Per-object work of the streaming tracker on its current frame, and its bounded memory bank.

Every step runs the same functions as the offline `VideoPredictor` (`decode_frame`,
`encode_memory`, hole filling) on the same memories, so the two give the same masks:

* a tracked frame is decoded from memory and its memory encoded from the decoder's
  high-resolution mask;
* a prompted or corrected frame is decoded now and its memory encoded later
  (`commit`, when the tracker moves on), from its shown mask, as offline does when
  propagation starts.

What a frame reads (memory_bank.gather_memory): every prompted frame, the spatial
memories of the ``num_maskmem - 1`` frames before it and the object pointers of the
``max_obj_ptrs_in_encoder - 1`` frames before it. `forget_before` drops the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.tracking.batched import track_objects
from masklet.tracking.memory_bank import recent_frame_indices
from masklet.tracking.motion import MotionConfig, prompt_prior
from masklet.tracking.motion_memory import frames_to_keep
from masklet.tracking.state import FrameOutput, ObjectState
from masklet.tracking.step import memory_of_prompted, track_frame
from masklet.tracking.stream_prompts import QueuedPrompt


class StreamStepper:
    """Decodes, corrects and remembers objects on the frame being processed (forwards only).

    Args:
        model: a `SAM2Model`.
        num_frames: the video's length, or None for a live source (sets the pointer window).
        fill_hole_area: holes of at most this many low-res pixels are filled (0: off).
    """

    def __init__(self, model: SAM2Model, num_frames: int | None, fill_hole_area: int,
                 motion: MotionConfig | None = None) -> None:
        self.model = model
        self.num_frames = num_frames
        self.fill_hole_area = fill_hole_area
        self.motion = motion

    @staticmethod
    def output_at(obj: ObjectState, frame_idx: int) -> FrameOutput:
        out = obj.cond_outputs.get(frame_idx) or obj.non_cond_outputs.get(frame_idx)
        if out is None:
            raise RuntimeError(f"object {obj.obj_id} has no output on frame {frame_idx}")
        return out

    def track(self, objects: Sequence[ObjectState], frame_idx: int, feats: ImageFeatures) -> None:
        """Decode objects on a new frame from their memories (one batched pass), and
        remember the frame."""
        if not objects:
            return
        outs = track_objects(self.model, feats, frame_idx, objects, self.num_frames, False,
                             fill_hole_area=self.fill_hole_area, motion=self.motion)
        for obj, out in zip(objects, outs):
            obj.non_cond_outputs[frame_idx] = out

    def apply_prompt(self, obj: ObjectState, frame_idx: int, feats: ImageFeatures,
                     prompt: QueuedPrompt) -> None:
        """Decode an object's prompt on the current frame; its memory waits for `commit`.

        A frame where the object was tracked stays a tracked frame (a correction, decoded
        with memory); otherwise it becomes a prompted frame decoded without memory, as
        the offline predictor does for prompts given before propagation.
        """
        is_init = frame_idx not in obj.non_cond_outputs
        store = obj.cond_outputs if is_init else obj.non_cond_outputs
        points = prompt.points
        if points is not None:
            old = obj.point_inputs.get(frame_idx)
            if old is not None and not prompt.clear_old_points:
                points = old.extended(points.coords, points.labels)
            obj.point_inputs[frame_idx] = points
        else:
            obj.point_inputs.pop(frame_idx, None)
        prev_logits = None
        if points is not None and frame_idx in store:
            prev_logits = store[frame_idx].pred_masks.clamp(-32.0, 32.0)
        store[frame_idx] = track_frame(
            self.model, feats, frame_idx, is_init, points, prompt.mask, obj.cond_outputs,
            obj.non_cond_outputs, self.num_frames, False, run_mem_encoder=False,
            fill_hole_area=self.fill_hole_area, prev_mask_logits=prev_logits,
            motion=self.motion, motion_prior=prompt_prior(store.get(frame_idx)))

    def commit(self, objects: Iterable[ObjectState], frame_idx: int,
               feats: ImageFeatures | None) -> None:
        """Encode the memories of prompted / corrected outputs on ``frame_idx``."""
        for obj in objects:
            out = obj.cond_outputs.get(frame_idx) or obj.non_cond_outputs.get(frame_idx)
            if out is None or out.has_memory:
                continue
            assert feats is not None, "a decoded frame always has its features"
            out.maskmem_features = memory_of_prompted(self.model, feats, out)

    def forget_before(self, objects: Iterable[ObjectState], frame_idx: int) -> None:
        """Drop the tracked outputs that neither ``frame_idx`` nor later frames read.

        Outputs still read for their object pointer only lose their spatial memory. With
        the motion option, the reliable frames that later frames may still choose
        (`motion_memory.frames_to_keep`) are kept whole, however old.
        """
        c = self.model.config
        recent = recent_frame_indices(frame_idx, self.model.num_maskmem,
                                      c.memory_temporal_stride_for_eval, False)
        if self.motion is not None:  # chosen by reliability, not recency
            recent = []
        memory_from = min((t for _, t in recent), default=frame_idx)
        pointer_from = memory_from
        if c.use_obj_ptrs_in_encoder:
            max_ptrs = c.max_obj_ptrs_in_encoder
            if self.num_frames is not None:
                max_ptrs = min(self.num_frames, max_ptrs)
            pointer_from = min(memory_from, frame_idx - (max_ptrs - 1))
        for obj in objects:
            keep = set()
            if self.motion is not None:
                keep = frames_to_keep(frame_idx, obj.non_cond_outputs, self.motion,
                                      self.model.num_maskmem, self.num_frames)
            for t in [t for t in obj.non_cond_outputs if t < memory_from and t not in keep]:
                if t < pointer_from:
                    del obj.non_cond_outputs[t]
                else:
                    obj.non_cond_outputs[t].maskmem_features = None
