"""`VideoPredictor`: prompts on any frame, propagation forwards and backwards, many objects.

Method names, arguments and results follow the official `SAM2VideoPredictor`; the
inference state is a typed `VideoSession` instead of a dict of dicts. The predictor
wraps a `SAM2Model`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from masklet.io import open_frames
from masklet.modeling.sam2 import NO_OBJ_SCORE, SAM2Model
from masklet.predictor.prompts import PromptError, mask_prompt, point_prompt
from masklet.tracking.batched import track_objects
from masklet.tracking.motion import FRESH, MotionConfig, prompt_prior, resolve_motion
from masklet.tracking.precision import check_precision, in_precision, inference_context
from masklet.tracking.session import VideoSession
from masklet.tracking.signals import FrameSignals, signals_of
from masklet.tracking.state import FrameOutput, ObjectState, PointPrompt
from masklet.tracking.step import memory_of_prompted, non_overlapping, track_frame

FrameResult = tuple[int, list[int], torch.Tensor]


class VideoPredictor:
    """Promptable video segmentation with SAM 2.

    Args:
        model: a `SAM2Model`.
        fill_hole_area: fill background holes up to this area in the low-res masks of every
            frame (official video default 8; the official code skips it on CPU).
        non_overlap_masks: make objects' output masks non-overlapping.
        clear_non_cond_mem_around_input: forget tracked memories near a corrected frame.
        add_all_frames_to_correct_as_cond: treat correction frames as prompted frames.
        progress: show a progress bar while propagating.
        precision: "fp32" (the official model's numbers) or "bf16" (autocast; see
            `masklet.tracking.precision`).
        motion: motion-aware tracking (SAMURAI): True for its published defaults, or a
            `MotionConfig`; None / False (default) tracks exactly as the official SAM 2.
    """

    def __init__(
        self,
        model: SAM2Model,
        *,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        progress: bool = True,
        precision: str = "fp32",
        motion: MotionConfig | bool | None = None,
    ) -> None:
        self.model = model
        self.precision = check_precision(precision, model.device)
        self.motion = resolve_motion(motion)
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.progress = progress

    def _context(self):
        return inference_context(self.precision, self.model.device)

    # ------------------------------------------------------------------ state
    @in_precision
    def init_state(self, video, *, feature_cache_size: int = 2) -> VideoSession:
        """Open a video: a JPEG folder, a video file, or a sequence of HxWx3 uint8 frames.

        Frames are decoded lazily; the first frame is encoded now (as the official does).
        """
        source = open_frames(video)
        num = source.num_frames
        if num is None:
            raise ValueError("VideoPredictor needs a video of known length; "
                             "use masklet.StreamingTracker for live sources")
        session = VideoSession(source, num, source.height, source.width, self.model.device,
                               feature_cache_size=feature_cache_size)
        session.frame_features(self.model, 0)
        return session

    def reset_state(self, state: VideoSession) -> None:
        """Remove every object, prompt and result (the video stays open)."""
        state.objects.clear()

    # ---------------------------------------------------------------- prompts
    @in_precision
    def add_new_points_or_box(
        self,
        state: VideoSession,
        frame_idx: int,
        obj_id: int,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ) -> FrameResult:
        """Add clicks and/or a box for one object on one frame; returns that frame's masks.

        Coordinates are pixels of the original video (or [0, 1] units when
        ``normalize_coords`` is False). Returns ``(frame_idx, obj_ids, mask_logits)`` with
        mask_logits [num_objects, 1, H, W] at the video's resolution.
        """
        frame_idx = state.check_frame(frame_idx)
        prompt = self._point_prompt(state, points, labels, box, normalize_coords)
        if box is not None and not clear_old_points:
            raise PromptError("a box must come before any click: use clear_old_points=True")
        obj = state.object_for_prompt(obj_id)
        old = obj.point_inputs.get(frame_idx)
        if old is not None and not clear_old_points:
            prompt = old.extended(prompt.coords, prompt.labels)
        obj.point_inputs[frame_idx] = prompt
        obj.mask_inputs.pop(frame_idx, None)
        return self._interact(state, obj, frame_idx, points=prompt, mask=None)

    def add_new_points(self, *args, **kwargs) -> FrameResult:
        """Alias of `add_new_points_or_box` (official, deprecated name)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @in_precision
    def add_new_mask(self, state: VideoSession, frame_idx: int, obj_id: int, mask) -> FrameResult:
        """Give one object's mask ([H, W] bool/0-1, any size) on one frame."""
        frame_idx = state.check_frame(frame_idx)
        m = mask_prompt(mask, image_size=self.model.image_size, device=state.device)
        obj = state.object_for_prompt(obj_id)
        obj.mask_inputs[frame_idx] = m
        obj.point_inputs.pop(frame_idx, None)
        return self._interact(state, obj, frame_idx, points=None, mask=m)

    def _point_prompt(self, state, points, labels, box, normalize_coords) -> PointPrompt:
        return point_prompt(points, labels, box, frame_hw=(state.video_height, state.video_width),
                            image_size=self.model.image_size, device=state.device,
                            normalize=normalize_coords)

    def _interact(self, state, obj: ObjectState, frame_idx, points, mask) -> FrameResult:
        is_init = frame_idx not in obj.frames_tracked
        reverse = obj.frames_tracked.get(frame_idx, False)
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if points is not None:
            prev = obj.current_output(frame_idx, is_cond)
            if prev is not None:
                prev_logits = prev.pred_masks.to(state.device).clamp(-32.0, 32.0)
        out = self._run_frame(state, obj, frame_idx, is_init, points, mask, reverse,
                              run_mem_encoder=False, prev_logits=prev_logits,
                              prior=prompt_prior(obj.current_output(frame_idx, is_cond)))
        (obj.pending_cond if is_cond else obj.pending_non_cond)[frame_idx] = out
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    # ------------------------------------------------------------- inference
    def _run_frame(self, state, obj, frame_idx, is_init, points, mask, reverse,
                   run_mem_encoder, prev_logits=None, prior=FRESH) -> FrameOutput:
        """Track one object on one frame; the output's pred_masks are what is shown."""
        feats = state.frame_features(self.model, frame_idx)
        return track_frame(self.model, feats, frame_idx, is_init, points, mask,
                           obj.cond_outputs, obj.non_cond_outputs, state.num_frames, reverse,
                           run_mem_encoder=run_mem_encoder, fill_hole_area=self.fill_hole_area,
                           prev_mask_logits=prev_logits, motion=self.motion, motion_prior=prior)

    def _commit_pending(self, state: VideoSession) -> None:
        """Encode memories of prompted frames and move them into the memory bank."""
        if not state.objects:
            raise RuntimeError("no object has a prompt: add points, a box or a mask first")
        for obj in state.objects.values():
            for pending, store in ((obj.pending_non_cond, obj.non_cond_outputs),
                                   (obj.pending_cond, obj.cond_outputs)):
                for frame_idx, out in pending.items():
                    if out.maskmem_features is None:
                        feats = state.frame_features(self.model, frame_idx)
                        out.maskmem_features = memory_of_prompted(self.model, feats, out)
                    store[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_around(obj, frame_idx)
                pending.clear()
            if not obj.cond_outputs:
                raise RuntimeError(f"object {obj.obj_id} has no prompt on any frame")
            for frame_idx in obj.cond_outputs:
                obj.non_cond_outputs.pop(frame_idx, None)

    def _clear_around(self, obj: ObjectState, frame_idx: int) -> None:
        reach = self.model.config.memory_temporal_stride_for_eval * self.model.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            obj.non_cond_outputs.pop(t, None)

    @in_precision
    def propagate_in_video_preflight(self, state: VideoSession) -> None:
        """Turn the pending prompts into memories (done by `propagate_in_video` itself)."""
        self._commit_pending(state)

    @in_precision
    def propagate_in_video(
        self,
        state: VideoSession,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[FrameResult]:
        """Track every object through the video, yielding ``(frame_idx, obj_ids, mask_logits)``.

        Starts at the earliest prompted frame unless ``start_frame_idx`` is given; goes
        backwards with ``reverse``. mask_logits: [num_objects, 1, H, W] at video resolution.
        """
        self._commit_pending(state)
        order = self._processing_order(state, start_frame_idx, max_frame_num_to_track, reverse)
        for frame_idx in tqdm(order, desc="propagate", disable=not self.progress):
            logits = self._track_frame(state, frame_idx, reverse)
            yield frame_idx, state.obj_ids, self._to_video_res(state, torch.cat(logits, 0))

    def _track_frame(self, state: VideoSession, frame_idx: int, reverse: bool):
        """Every object's low-res logits on one frame: its prompted output where it has one,
        else tracked from memory (all such objects in one batched pass)."""
        objects = list(state.objects.values())
        to_track = [obj for obj in objects if frame_idx not in obj.cond_outputs]
        if to_track:
            feats = state.frame_features(self.model, frame_idx)
            outs = track_objects(self.model, feats, frame_idx, to_track, state.num_frames,
                                 reverse, fill_hole_area=self.fill_hole_area,
                                 motion=self.motion)
            for obj, out in zip(to_track, outs):
                obj.non_cond_outputs[frame_idx] = out
        logits = []
        for obj in objects:
            if frame_idx in obj.cond_outputs:
                logits.append(obj.cond_outputs[frame_idx].pred_masks.to(state.device))
                if self.clear_non_cond_mem_around_input:
                    self._clear_around(obj, frame_idx)
            else:
                logits.append(obj.non_cond_outputs[frame_idx].pred_masks)
            obj.frames_tracked[frame_idx] = reverse
        return logits

    @staticmethod
    def _processing_order(state, start, max_num, reverse) -> range:
        if start is None:
            start = min(t for obj in state.objects.values() for t in obj.cond_outputs)
        start = state.check_frame(start)
        max_num = state.num_frames if max_num is None else max_num
        if reverse:
            end = max(start - max_num, 0)
            return range(start, end - 1, -1) if start > 0 else range(0)
        end = min(start + max_num, state.num_frames - 1)
        return range(start, end + 1)

    # --------------------------------------------------------------- editing
    @in_precision
    def clear_all_prompts_in_frame(self, state: VideoSession, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> FrameResult | None:
        """Remove one object's prompts on one frame; returns the frame's updated masks."""
        frame_idx = state.check_frame(frame_idx)
        state.get_object(obj_id).clear_frame_prompts(frame_idx)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.pending_cond for o in state.objects.values())
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    @in_precision
    def remove_object(self, state: VideoSession, obj_id: int, strict: bool = True,
                      need_output: bool = True):
        """Forget one object. Returns ``(obj_ids, [(frame_idx, mask_logits), ...])`` for the
        frames where it had prompts. Unlike the official default, an unknown id raises
        unless ``strict=False``."""
        if obj_id not in state.objects:
            if strict:
                state.get_object(obj_id)  # raises UnknownObjectError with the known ids
            return state.obj_ids, []
        if len(state.objects) == 1:
            self.reset_state(state)
            return state.obj_ids, []
        frames = sorted(state.objects[obj_id].input_frames())
        for frame_idx in frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        del state.objects[obj_id]
        updated = []
        if need_output:
            for frame_idx in frames:
                is_cond = any(frame_idx in o.pending_cond for o in state.objects.values())
                updated.append((frame_idx, self._consolidated(state, frame_idx, is_cond)))
        return state.obj_ids, updated

    # ---------------------------------------------------------------- output
    def frame_signals(self, state: VideoSession, frame_idx: int) -> dict[int, FrameSignals]:
        """Each object's per-frame signals (object score, predicted IoU, motion score) on a
        frame, from its newest output there; objects without one are left out."""
        frame_idx = state.check_frame(frame_idx)
        found = {}
        for obj_id, obj in state.objects.items():
            out = obj.current_output(frame_idx, frame_idx in obj.pending_cond)
            if out is not None:
                found[obj_id] = signals_of(out)
        return found

    def _consolidated(self, state: VideoSession, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """Every object's newest mask on a frame, [num_objects, 1, H, W] at video resolution."""
        hw = (state.video_height, state.video_width)
        out = torch.full((len(state.objects), 1, *hw), NO_OBJ_SCORE, device=state.device)
        for i, obj in enumerate(state.objects.values()):
            found = obj.current_output(frame_idx, is_cond)
            if found is not None:
                out[i : i + 1] = F.interpolate(found.pred_masks.to(state.device), size=hw,
                                               mode="bilinear", align_corners=False)
        return non_overlapping(out) if self.non_overlap_masks else out

    def _to_video_res(self, state: VideoSession, logits: torch.Tensor) -> torch.Tensor:
        hw = (state.video_height, state.video_width)
        if tuple(logits.shape[-2:]) != hw:
            logits = F.interpolate(logits, size=hw, mode="bilinear", align_corners=False)
        return non_overlapping(logits) if self.non_overlap_masks else logits
