"""`OnnxStreamingTracker`: masklet's `StreamingTracker` on exported ONNX graphs, no PyTorch.

    tracker = OnnxStreamingTracker("export_dir")
    with tracker.start("video.mp4") as session:
        session.add_points(1, [[210, 350]], [1])      # on frame 0, applied when it is read
        for frame_idx, obj_ids, masks in session:      # masks: [N, 1, H, W] float32 logits
            if frame_idx == 40:
                session.add_box(2, [10, 20, 200, 220])  # a new object on frame 40

Frames are read forwards only, up to ``prefetch`` frames ahead in a background thread. A
session keeps, per object, its prompted frames' outputs and only the tracked outputs that
later frames read; of the video it holds the current frame (its image and features) and
the frames read ahead. The masks equal masklet's StreamingTracker's with the same model
(fp32) and prompts.
"""

from __future__ import annotations

import operator
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from masklet_runtime.bank import ObjectState
from masklet_runtime.graphs import load_graphs
from masklet_runtime.postprocess import non_overlapping, resize_bilinear
from masklet_runtime.prefetch import ModelInputs
from masklet_runtime.preprocess import FramePreprocessor
from masklet_runtime.prompts import video_mask_prompt, video_point_prompt
from masklet_runtime.sources import FrameSource, open_source
from masklet_runtime.stepper import FrameFeatures, GraphStepper, Prompt

MaskSink = Callable[[int, list, np.ndarray], Any]


class UnknownObjectError(KeyError):
    """An object id that the session does not hold."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class FrameSignals(NamedTuple):
    """What the model said about one object on the current frame: ``object_score`` its
    presence logit (> 0: visible), ``iou`` the predicted IoU of the shown mask."""

    object_score: float
    iou: float


class TrackedFrame(NamedTuple):
    """One frame's result: ``masks`` [num_objects, 1, H, W] float32 logits at the source
    resolution, objects in the order of ``obj_ids`` (the order they were first prompted)."""

    frame_idx: int
    obj_ids: list[int]
    masks: np.ndarray


def frame_result(objects: Iterable[ObjectState], frame_idx: int, hw: tuple[int, int],
                 non_overlap: bool) -> TrackedFrame:
    """Every object's shown mask on a frame, upsampled to the source size ``hw``."""
    objects = list(objects)
    if not objects:
        return TrackedFrame(frame_idx, [], np.empty((0, 1, *hw), dtype=np.float32))
    low = []
    for obj in objects:
        out = obj.output_at(frame_idx)
        if out is None:
            raise RuntimeError(f"object {obj.obj_id} has no output on frame {frame_idx}")
        low.append(out.pred_masks)
    masks = np.concatenate(low)
    if masks.shape[-2:] != hw:
        masks = resize_bilinear(masks, hw)
    if non_overlap:
        masks = non_overlapping(masks)
    return TrackedFrame(frame_idx, [obj.obj_id for obj in objects], masks)


def signals_at(objects: Iterable[ObjectState], frame_idx: int) -> dict[int, FrameSignals]:
    """Each object's signals on a frame, from its output there (objects without one are
    left out)."""
    outs = {obj.obj_id: obj.output_at(frame_idx) for obj in objects}
    return {obj_id: FrameSignals(float(out.object_score_logits.flat[0]), out.iou)
            for obj_id, out in outs.items() if out is not None}


def count_memories(objects: Iterable[ObjectState]) -> int:
    """Spatial memories held by the objects' prompted and tracked outputs."""
    return sum(out.has_memory for obj in objects
               for out in (*obj.cond_outputs.values(), *obj.non_cond_outputs.values()))


def count_outputs(objects: Iterable[ObjectState]) -> int:
    """Per-frame outputs (prompted and tracked) held by the objects."""
    return sum(len(obj.cond_outputs) + len(obj.non_cond_outputs) for obj in objects)


def check_int(value, name: str) -> int:
    """``value`` as a plain int (bools and floats are refused, not silently cast)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def check_obj_id(obj_id) -> int:
    """An object id as a plain int (bools and floats are refused, not silently cast)."""
    return check_int(obj_id, "obj_id")


class OnnxStreamingTracker:
    """Opens streaming sessions on one export with one set of options.

    Args:
        graphs: an export folder (what `masklet export` wrote) or loaded `Graphs`.
        fill_hole_area: fill background holes up to this area in the low-res masks (0: off).
        non_overlap_masks: make the returned masks of different objects non-overlapping.
        intra_op_threads: ONNX Runtime threads per graph when loading a folder (None:
            its default).
        prefetch: frames read and preprocessed ahead in a background thread (0: none).
    Raises:
        ExportError: a folder that is not a usable export (one-line message).
        ValueError: a negative ``prefetch``.
    """

    def __init__(self, graphs: Any, *, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 intra_op_threads: int | None = None, prefetch: int = 2) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        if isinstance(graphs, (str, os.PathLike)):
            graphs = load_graphs(graphs, intra_op_threads=intra_op_threads)
        self.graphs = graphs
        s = graphs.settings
        self.image_size = int(s["image_size"])
        self.preprocess = FramePreprocessor(self.image_size, s["image_mean"], s["image_std"])
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.prefetch = prefetch

    def start(self, source: Any, *, sinks: Iterable[MaskSink] = ()) -> OnnxStreamingSession:
        """Open a source: a video file path (or its bytes), a folder of frame images, a
        [T, H, W, 3] uint8 array or a list of [H, W, 3] frames, or an iterator of frames
        read live. Raises VideoReadError for a missing, unreadable or empty source."""
        return OnnxStreamingSession(self, open_source(source), list(sinks))


class OnnxStreamingSession:
    """One video being tracked; iterate it (or call `step`) to process the next frame.

    Prompts apply to the current frame: before the first `step` that is frame 0, and they
    are applied when it is processed (the prompt methods then return None); afterwards it
    is the frame `step` returned last, and a prompt re-decodes it at once and returns its
    updated masks (a correction: an object's first prompt, or a new prompt on its prompted
    frame, makes a prompted frame; a prompt on a frame where it was tracked refines it as a
    tracked frame). Updated masks also go to the sinks again.
    """

    def __init__(self, tracker: OnnxStreamingTracker, source: FrameSource,
                 sinks: list[MaskSink]) -> None:
        self._tracker = tracker
        self._inputs: ModelInputs | None = ModelInputs(source, tracker.preprocess,
                                                       tracker.prefetch)
        self._sinks = sinks
        # Fixed at the start: a live source learns its length only at its end, and the
        # pointer encoding must not change then.
        self.num_frames: int | None = source.num_frames
        self.video_height, self.video_width = source.height, source.width
        self.objects: OrderedDict[int, ObjectState] = OrderedDict()
        self._stepper = GraphStepper(tracker.graphs, self.num_frames, tracker.fill_hole_area)
        self._frame_idx = 0
        self._processed = self._finished = self._closed = False
        self._image: np.ndarray | None = None  # [1, 3, S, S] current frame
        self._features: FrameFeatures | None = None
        self._queued: list[Prompt] = []

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

    def retained_frames(self) -> int:
        """Preprocessed frames held: the current one and those read ahead (<= 1 + prefetch)."""
        ahead = self._inputs.num_ahead if self._inputs is not None else 0
        return ahead + int(self._image is not None)

    def retained_memories(self) -> int:
        """Spatial memories held over all objects: prompted frames' plus at most
        ``num_maskmem`` recent frames'."""
        return count_memories(self.objects.values())

    def retained_outputs(self) -> int:
        """Per-frame outputs held over all objects: prompted frames' plus at most
        ``max_obj_ptrs_in_encoder`` recent frames'."""
        return count_outputs(self.objects.values())

    def retained_features(self) -> int:
        """Image-feature sets held: 1 (the current frame's) once computed, else 0."""
        return int(self._features is not None)

    def frame_signals(self) -> dict[int, FrameSignals]:
        """Each object's signals on the current frame; empty before the first `step`."""
        if not self._processed:
            return {}
        return signals_at(self.objects.values(), self._frame_idx)

    # --------------------------------------------------------------- prompts
    def add_points(self, obj_id: int, points=None, labels=None, *, box=None,
                   clear_old_points: bool = True) -> TrackedFrame | None:
        """Clicks ([N, 2] (x, y) pixels of the source, labels [N]: 1 positive, 0 negative)
        and/or a box [4] (x0, y0, x1, y1) for one object on the current frame.

        ``clear_old_points=False`` adds the clicks to this object's earlier clicks on this
        frame. Returns the frame's updated masks, or None before the frame is read.
        """
        obj_id = check_obj_id(obj_id)
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any click: use clear_old_points=True")
        prompt = video_point_prompt(points, labels, box, (self.video_height, self.video_width),
                                    self._tracker.image_size)
        return self._prompt(Prompt(obj_id, prompt, None, clear_old_points))

    def add_box(self, obj_id: int, box) -> TrackedFrame | None:
        """A box [4] (x0, y0, x1, y1, source pixels) for one object on the current frame."""
        return self.add_points(obj_id, box=box)

    def add_mask(self, obj_id: int, mask) -> TrackedFrame | None:
        """A mask [H, W] (bool or 0/1, any size) for one object on the current frame."""
        obj_id = check_obj_id(obj_id)
        return self._prompt(Prompt(obj_id, None, video_mask_prompt(mask, self._tracker.image_size)))

    def _prompt(self, prompt: Prompt) -> TrackedFrame | None:
        self._check_open()
        obj = self.objects.setdefault(prompt.obj_id, ObjectState(prompt.obj_id))
        if not self._processed:
            self._queued.append(prompt)
            return None
        self._stepper.apply_prompt(obj, self._frame_idx, self._current_features(), prompt)
        return self._emit()

    def remove_object(self, obj_id: int) -> TrackedFrame | None:
        """Forget one object; returns the current frame's masks without it (None before the
        frame is read). Raises UnknownObjectError for an id the session does not hold."""
        if obj_id not in self.objects:
            raise UnknownObjectError(
                f"unknown object id {obj_id!r}; the session holds {self.obj_ids}")
        del self.objects[obj_id]
        self._queued = [p for p in self._queued if p.obj_id != obj_id]
        return self._emit() if self._processed else None

    # -------------------------------------------------------------- tracking
    def step(self) -> TrackedFrame | None:
        """Process the next frame (frame 0 the first time); None once the source has ended
        (or the session is closed)."""
        if self._finished:
            return None
        idx = self._frame_idx + 1 if self._processed else self._frame_idx
        if self._processed:
            # The current frame can no longer be corrected: remember it as it is now.
            self._stepper.commit(self.objects.values(), self._frame_idx, self._features)
        image = self._inputs.next() if self._inputs is not None else None
        if image is None:
            self._finish()
            return None
        self._frame_idx, self._features, self._image = idx, None, image
        self._stepper.memory.forget(self.objects.values(), idx, self.num_frames)
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

    def __iter__(self) -> OnnxStreamingSession:
        return self

    def __next__(self) -> TrackedFrame:
        result = self.step()
        if result is None:
            raise StopIteration
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the streaming session is closed")

    def _finish(self) -> None:
        # The last frame's image and features stay, so that it can still be corrected.
        self._finished = True
        if self._inputs is not None:
            self._inputs.close()
            self._inputs = None

    def _current_features(self) -> FrameFeatures:
        if self._features is None:
            assert self._image is not None
            self._features = self._stepper.encode_image(self._image)
        return self._features

    def _emit(self) -> TrackedFrame:
        """The current frame's masks at the source resolution, handed to every sink."""
        result = frame_result(self.objects.values(), self._frame_idx,
                              (self.video_height, self.video_width),
                              self._tracker.non_overlap_masks)
        for sink in self._sinks:
            sink(*result)
        return result

    # --------------------------------------------------------------- closing
    def close(self) -> None:
        """Stop reading the source and drop every frame, feature and memory (idempotent)."""
        self._closed = self._finished = True
        if self._inputs is not None:
            self._inputs.close()
            self._inputs = None
        self._image = self._features = None
        self.objects.clear()
        self._queued.clear()

    def __enter__(self) -> OnnxStreamingSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
