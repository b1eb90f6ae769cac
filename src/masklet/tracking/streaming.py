"""`StreamingTracker`: track objects through a video of any length, or a live camera,
in bounded memory, giving the masks the offline `VideoPredictor` gives.

    tracker = StreamingTracker(model)
    with tracker.start("video.mp4", sinks=[PngMaskSink("out/")]) as session:
        session.add_points(1, [[210, 350]], [1])      # on frame 0, applied when it is read
        for frame_idx, obj_ids, masks in session:      # masks: [N, 1, H, W] logits
            if frame_idx == 40:
                session.add_box(2, [10, 20, 200, 220])  # a new object on frame 40

Frames are read one at a time, forwards only. A session keeps, per object, its prompted
frames' outputs and only the tracked outputs that later frames read (see
`StreamingSession.retained_memories`); of the video it holds the current frame (its
image and features) plus the frames being prefetched.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from types import TracebackType
from typing import NamedTuple

import torch
import torch.nn.functional as F

from masklet.io import FrameIndexError, PreprocessedFrames, VideoInput, open_frames
from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.predictor.prompts import mask_prompt, point_prompt
from masklet.tracking.motion import MotionConfig, resolve_motion
from masklet.tracking.precision import check_precision, in_precision, inference_context
from masklet.tracking.session import UnknownObjectError
from masklet.tracking.signals import FrameSignals, signals_of
from masklet.tracking.sinks import MaskSink
from masklet.tracking.state import ObjectState
from masklet.tracking.step import non_overlapping
from masklet.tracking.stream_bank import StreamStepper
from masklet.tracking.stream_prompts import QueuedPrompt, check_obj_id


class TrackedFrame(NamedTuple):
    """One frame's result: ``masks`` [num_objects, 1, H, W] logits at the source resolution,
    objects in the order of ``obj_ids`` (the order in which they were first prompted)."""

    frame_idx: int
    obj_ids: list[int]
    masks: torch.Tensor


class StreamingTracker:
    """Opens streaming sessions with one model and one set of options.

    Args:
        model: a `SAM2Model`.
        fill_hole_area: fill background holes up to this area in the low-res masks
            (as `VideoPredictor`; 0 disables).
        non_overlap_masks: make the returned masks of different objects non-overlapping.
        prefetch: frames read and preprocessed ahead in a background thread (0: none).
        precision: "fp32" (the official model's numbers) or "bf16" (autocast; see
            `masklet.tracking.precision`).
        motion: motion-aware tracking (SAMURAI, see `masklet.tracking.motion`): True for
            its published defaults, or a `MotionConfig`; None / False (default) is off.
    """

    def __init__(
        self,
        model: SAM2Model,
        *,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        prefetch: int = 2,
        precision: str = "fp32",
        motion: MotionConfig | bool | None = None,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.model = model
        self.precision = check_precision(precision, model.device)
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.prefetch = prefetch
        self.motion = resolve_motion(motion)

    def start(self, source: VideoInput, *, sinks: Iterable[MaskSink] = ()) -> StreamingSession:
        """Open a source: anything `masklet.io.open_frames` reads (frame folder, video file,
        frame arrays, or an iterator of [H, W, 3] uint8 frames read live).

        Raises VideoReadError for a missing, unreadable or empty source.
        """
        frames = PreprocessedFrames(open_frames(source), image_size=self.model.image_size,
                                    device=self.model.device, cache_size=1,
                                    prefetch=self.prefetch)
        return StreamingSession(self, frames, list(sinks))


class StreamingSession:
    """One video being tracked; iterate it (or call `step`) to process the next frame.

    Prompts apply to the current frame: before the first `step` that is frame 0, and the
    prompts are applied when it is processed (the prompt methods then return None);
    afterwards it is the frame `step` returned last, and a prompt re-decodes it at once
    and returns its updated masks (a correction, with the offline predictor's rules: an
    object's first prompt, or a new prompt on its prompted frame, makes a prompted frame;
    a prompt on a frame where it was tracked refines it as a tracked frame). Updated
    masks also go to the sinks again.

    Equality with `VideoPredictor`: for a source of known length the masks equal offline
    propagation with the same prompts given in frame order. A live source's length is
    unknown, so the object-pointer window is ``max_obj_ptrs_in_encoder`` (16) frames; the
    result equals offline whenever the video has at least that many frames.
    """

    def __init__(self, tracker: StreamingTracker, frames: PreprocessedFrames,
                 sinks: list[MaskSink]) -> None:
        self._tracker = tracker
        self._model = tracker.model
        self._frames: PreprocessedFrames | None = frames
        self._sinks = sinks
        # Fixed at the start: a live source learns its length only at its end, and the
        # pointer encoding must not change then.
        self.num_frames: int | None = frames.num_frames
        self.video_height, self.video_width = frames.video_height, frames.video_width
        self.objects: OrderedDict[int, ObjectState] = OrderedDict()
        self._stepper = StreamStepper(self._model, self.num_frames, tracker.fill_hole_area,
                                      tracker.motion)
        self._frame_idx = 0
        self._processed = False
        self._finished = False
        self._closed = False
        self._image: torch.Tensor | None = None  # [3, S, S] current frame
        self._features: ImageFeatures | None = None
        self._queued: list[QueuedPrompt] = []

    def _context(self):
        return inference_context(self._tracker.precision, self._model.device)

    # ---------------------------------------------------------------- status
    @property
    def frame_idx(self) -> int:
        """The current frame: prompts apply to it."""
        return self._frame_idx

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    @property
    def finished(self) -> bool:
        """True once the source has no frame after the current one."""
        return self._finished

    def retained_memories(self) -> int:
        """Spatial memories held over all objects: prompted frames' plus at most
        ``num_maskmem`` recent frames' (those the current frame reads, and its own; one
        more with the motion option, whose chosen frames need not include the adjacent)."""
        return sum(out.has_memory for obj in self.objects.values()
                   for out in (*obj.cond_outputs.values(), *obj.non_cond_outputs.values()))

    def retained_outputs(self) -> int:
        """Per-frame outputs held over all objects (each holds an object pointer): prompted
        frames' plus at most ``max_obj_ptrs_in_encoder`` recent frames'."""
        return sum(len(obj.cond_outputs) + len(obj.non_cond_outputs)
                   for obj in self.objects.values())

    def retained_frames(self) -> int:
        """Preprocessed frames held: the current one and those prefetched (<= 1 + prefetch)."""
        if self._frames is not None:
            return self._frames.num_held_frames
        return int(self._image is not None)

    def retained_features(self) -> int:
        """Image-feature sets held: 1 (the current frame's) once computed, else 0."""
        return int(self._features is not None)

    def frame_signals(self) -> dict[int, FrameSignals]:
        """Each object's signals (object score, predicted IoU, motion score) on the current
        frame; empty before the first `step`."""
        if not self._processed:
            return {}
        return {obj_id: signals_of(self._stepper.output_at(obj, self._frame_idx))
                for obj_id, obj in self.objects.items()
                if self._frame_idx in obj.cond_outputs or self._frame_idx in obj.non_cond_outputs}

    # --------------------------------------------------------------- prompts
    def add_points(self, obj_id: int, points=None, labels=None, *, box=None,
                   clear_old_points: bool = True) -> TrackedFrame | None:
        """Clicks ([N, 2] (x, y) pixels of the source, labels [N]: 1 positive, 0 negative)
        and/or a box [4] (x0, y0, x1, y1) for one object on the current frame.

        ``clear_old_points=False`` adds the clicks to this object's earlier clicks on
        this frame. Returns the frame's updated masks, or None before the frame is read.
        """
        obj_id = check_obj_id(obj_id)
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any click: use clear_old_points=True")
        prompt = point_prompt(points, labels, box, frame_hw=(self.video_height, self.video_width),
                              image_size=self._model.image_size, device=self._model.device)
        return self._prompt(QueuedPrompt(obj_id, prompt, None, clear_old_points))

    def add_box(self, obj_id: int, box) -> TrackedFrame | None:
        """A box [4] (x0, y0, x1, y1, source pixels) for one object on the current frame."""
        return self.add_points(obj_id, box=box)

    def add_mask(self, obj_id: int, mask) -> TrackedFrame | None:
        """A mask [H, W] (bool or 0/1, any size) for one object on the current frame."""
        obj_id = check_obj_id(obj_id)
        m = mask_prompt(mask, image_size=self._model.image_size, device=self._model.device)
        return self._prompt(QueuedPrompt(obj_id, None, m))

    @in_precision
    def _prompt(self, prompt: QueuedPrompt) -> TrackedFrame | None:
        self._check_open()
        obj = self.objects.setdefault(prompt.obj_id, ObjectState(prompt.obj_id))
        if not self._processed:
            self._queued.append(prompt)
            return None
        self._stepper.apply_prompt(obj, self._frame_idx, self._current_features(), prompt)
        return self._emit()

    @in_precision
    def remove_object(self, obj_id: int) -> TrackedFrame | None:
        """Forget one object; returns the current frame's masks without it (None before
        the frame is read). Raises UnknownObjectError for an id the session does not hold."""
        if obj_id not in self.objects:
            raise UnknownObjectError(
                f"unknown object id {obj_id!r}; the session holds {self.obj_ids}")
        del self.objects[obj_id]
        self._queued = [p for p in self._queued if p.obj_id != obj_id]
        return self._emit() if self._processed else None

    # -------------------------------------------------------------- tracking
    @in_precision
    def step(self) -> TrackedFrame | None:
        """Process the next frame (frame 0 the first time); None once the source has ended."""
        if self._finished:
            return None
        idx = self._frame_idx + 1 if self._processed else self._frame_idx
        if self._processed:
            # The current frame can no longer be corrected: remember it as it is now.
            self._stepper.commit(self.objects.values(), self._frame_idx, self._features)
        image = self._read(idx)
        if image is None:
            self._finish()
            return None
        self._frame_idx, self._image, self._features = idx, image, None
        self._stepper.forget_before(self.objects.values(), idx)
        for obj in self.objects.values():
            obj.point_inputs.clear()  # clicks of earlier frames cannot be extended
        tracked = [obj for obj in self.objects.values() if obj.cond_outputs]
        if tracked:
            self._stepper.track(tracked, idx, self._current_features())
        self._processed = True
        queued, self._queued = self._queued, []
        for prompt in queued:
            self._stepper.apply_prompt(self.objects[prompt.obj_id], idx,
                                       self._current_features(), prompt)
        return self._emit()

    def run(self) -> int:
        """Process every remaining frame (results go to the sinks); returns how many."""
        count = 0
        while self.step() is not None:
            count += 1
        return count

    def __iter__(self) -> StreamingSession:
        return self

    def __next__(self) -> TrackedFrame:
        result = self.step()
        if result is None:
            raise StopIteration
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the streaming session is closed")

    def _read(self, idx: int) -> torch.Tensor | None:
        """Frame ``idx`` preprocessed [3, S, S], or None past the end of the source."""
        if self._frames is None:
            return None
        try:
            return self._frames[idx]
        except FrameIndexError:
            total = self._frames.num_frames
            if total is not None and idx >= total:
                return None
            raise

    def _finish(self) -> None:
        # The last frame's image stays, so that it can still be corrected.
        self._finished = True
        if self._frames is not None:
            self._frames.close()
            self._frames = None

    def _current_features(self) -> ImageFeatures:
        if self._features is None:
            assert self._image is not None
            self._features = self._model.forward_image(self._image[None].to(self._model.dtype))
        return self._features

    def _emit(self) -> TrackedFrame:
        """The current frame's masks at the source resolution, handed to every sink."""
        hw = (self.video_height, self.video_width)
        device = self._model.device
        if self.objects:
            low = torch.cat([self._stepper.output_at(obj, self._frame_idx).pred_masks
                             for obj in self.objects.values()]).to(device)
            masks = low if tuple(low.shape[-2:]) == hw else F.interpolate(
                low, size=hw, mode="bilinear", align_corners=False)
            if self._tracker.non_overlap_masks:
                masks = non_overlapping(masks)
        else:
            masks = torch.empty(0, 1, *hw, device=device)
        result = TrackedFrame(self._frame_idx, self.obj_ids, masks)
        for sink in self._sinks:
            sink(*result)
        return result

    # --------------------------------------------------------------- closing
    def close(self) -> None:
        """Stop reading the source and drop every frame, feature and memory (idempotent)."""
        self._closed = self._finished = True
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        self._image = self._features = None
        self.objects.clear()
        self._queued.clear()

    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
