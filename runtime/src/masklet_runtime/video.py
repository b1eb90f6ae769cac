"""`OnnxVideoPredictor`: prompts on any frames, tracked forwards and backwards as masklet's
VideoPredictor tracks them (what `masklet video --onnx` runs), on exported graphs.

    predictor = OnnxVideoPredictor("export_dir")
    video = predictor.open("clip.mp4")
    video.add_points(40, 1, [[210, 350]], [1])
    video.add_box(55, 2, [10, 20, 200, 220])
    for frame_idx, obj_ids, masks in video.propagate():  # frames 40..T-1, then 40..0
        ...

The order of work is the official SAM 2's: every prompt is decoded on its frame first,
without memory, and the prompted frames' memories are encoded; the video is then tracked
forwards from the earliest prompted frame to the end, and backwards from that frame to
frame 0, so the earliest prompted frame is yielded twice (again as the backward pass's
first frame). An object prompted only on a later frame shows on earlier frames too,
tracked from the memories of its prompted frames.

Corrections: a prompt added after a propagation, on a frame where that object was
tracked, refines the tracked mask there instead of starting from nothing (a negative
click alone trims it). It is applied when the next propagation reaches the frame: the
object is tracked there, the prompt is decoded with the object's memory and its tracked
mask, and the frames after it in that pass read the corrected memory, as in a streaming
correction. masklet's VideoPredictor gives the same masks when it propagates up to the
frame, takes the correction there and propagates on from the next frame. The frame stays
a tracked frame (the official default): only the pass's later frames see it.

Memory stays bounded in the video's length: per object, the prompted frames' outputs and
the tracked outputs that later steps of the pass read, plus the forward outputs just
after the earliest prompted frame, which the backward pass starts from (and a feature
cache, when asked for, within its byte budget). Frames are read
from the source once per pass: the backward pass reads them in chunks of at most
``reverse_chunk_bytes`` of decoded frames, each time reading the source from its start.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any

import numpy as np

from masklet_runtime.bank import ObjectState
from masklet_runtime.prefetch import ModelInputs
from masklet_runtime.prompts import PromptError, video_mask_prompt, video_point_prompt
from masklet_runtime.sources import FrameSource, VideoReadError, open_source
from masklet_runtime.stepper import FrameFeatures, GraphStepper, Prompt
from masklet_runtime.tracker import (
    FrameSignals,
    OnnxStreamingTracker,
    TrackedFrame,
    UnknownObjectError,
    check_int,
    check_obj_id,
    count_memories,
    count_outputs,
    frame_result,
    signals_at,
)

# Decoded frames held at once by the backward pass (a 1080p frame is about 6 MB).
REVERSE_CHUNK_BYTES = 256 * 2**20


class OnnxVideoPredictor:
    """Opens videos for offline tracking on one export with one set of options.

    Args:
        graphs: an export folder (what `masklet export` wrote) or loaded `Graphs`.
        fill_hole_area, non_overlap_masks, intra_op_threads, prefetch: as for
            `OnnxStreamingTracker` (prefetch applies to the forward pass).
        reverse_chunk_bytes: the most decoded frames (in bytes) the backward pass holds.
        feature_cache_bytes: the most image features (in bytes) a video keeps between
            frames and passes (0, the default: none). A kept frame is not encoded again:
            prompted frames are encoded once instead of twice a pass, and a propagation
            after a correction encodes only the frames not kept. tiny at 1024 px: 20 MiB
            a frame.
    """

    def __init__(self, graphs: Any, *, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 intra_op_threads: int | None = None, prefetch: int = 2,
                 reverse_chunk_bytes: int = REVERSE_CHUNK_BYTES,
                 feature_cache_bytes: int = 0) -> None:
        for name, value, least in (("reverse_chunk_bytes", reverse_chunk_bytes, 1),
                                   ("feature_cache_bytes", feature_cache_bytes, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        # The streaming tracker holds the graphs and the options; the passes reuse them.
        self.tracker = OnnxStreamingTracker(
            graphs, fill_hole_area=fill_hole_area, non_overlap_masks=non_overlap_masks,
            intra_op_threads=intra_op_threads, prefetch=prefetch)
        self.reverse_chunk_bytes = reverse_chunk_bytes
        self.feature_cache_bytes = feature_cache_bytes

    def open(self, video: Any) -> OnnxVideo:
        """A video read more than once: a file path (or its bytes), a folder of frames, a
        [T, H, W, 3] uint8 array or a sequence of [H, W, 3] frames. Raises VideoReadError
        for a missing, unreadable or empty video, or a live source (an iterator)."""
        return OnnxVideo(self, video)


def _rereadable(video: Any) -> bool:
    if isinstance(video, (str, os.PathLike, bytes, bytearray, np.ndarray)):
        return True
    return isinstance(video, Sequence)


class OnnxVideo:
    """One video's prompts; `propagate` tracks them through it.

    Prompts are checked when added and decoded by `propagate`, which tracks from the
    prompts alone each time it is called (a prompt added later takes effect then). A
    prompt on a frame where its object was tracked by an earlier propagation is a
    correction (see the module's docstring).
    """

    def __init__(self, predictor: OnnxVideoPredictor, video: Any) -> None:
        if isinstance(video, FrameSource) or not _rereadable(video):
            raise VideoReadError(
                "tracking forwards and backwards reads the video more than once: give a file, "
                "a folder or frames in memory (OnnxStreamingTracker tracks a live source)")
        self._predictor = predictor
        self._video = video
        with closing(open_source(video)) as probe:
            self.num_frames: int = probe.num_frames
            self.video_height, self.video_width = probe.height, probe.width
            self._name = probe.name
        self._prompts: dict[int, list[Prompt]] = {}  # decoded first, without memory
        self._corrections: dict[int, list[Prompt]] = {}  # applied as the pass reaches them
        # Per object, [T] bool: the frames some propagation tracked it on (a byte a frame).
        self._tracked: dict[int, np.ndarray] = {}
        self._obj_order: list[int] = []  # objects in the order first prompted
        self.objects: OrderedDict[int, ObjectState] = OrderedDict()
        # Frame -> (image_embed, high_res_0, high_res_1, pos_enc), within the byte budget.
        self._features: dict[int, tuple[np.ndarray, ...]] = {}
        self._feature_bytes = 0

    # --------------------------------------------------------------- prompts
    @property
    def obj_ids(self) -> list[int]:
        return list(self._obj_order)

    def add_points(self, frame_idx: int, obj_id: int, points=None, labels=None, *, box=None,
                   clear_old_points: bool = True) -> None:
        """Clicks ([N, 2] (x, y) source pixels, labels [N]: 1 positive, 0 negative) and / or
        a box [4] (x0, y0, x1, y1) for one object on one frame. ``clear_old_points=False``
        adds the clicks to this object's earlier clicks on that frame."""
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any click: use clear_old_points=True")
        hw = (self.video_height, self.video_width)
        points = video_point_prompt(points, labels, box, hw, self._predictor.tracker.image_size)
        self._add(frame_idx, Prompt(check_obj_id(obj_id), points, None, clear_old_points))

    def add_box(self, frame_idx: int, obj_id: int, box) -> None:
        """A box [4] (x0, y0, x1, y1, source pixels) for one object on one frame."""
        self.add_points(frame_idx, obj_id, box=box)

    def add_mask(self, frame_idx: int, obj_id: int, mask) -> None:
        """A mask [H, W] (bool or 0/1, any size) for one object on one frame."""
        mask = video_mask_prompt(mask, self._predictor.tracker.image_size)
        self._add(frame_idx, Prompt(check_obj_id(obj_id), None, mask))

    def _add(self, frame_idx: int, prompt: Prompt) -> None:
        frame_idx = self._check_frame(frame_idx)
        tracked = prompt.obj_id in self._tracked and self._tracked[prompt.obj_id][frame_idx]
        (self._corrections if tracked else self._prompts).setdefault(frame_idx, []).append(prompt)
        if prompt.obj_id not in self._obj_order:
            self._obj_order.append(prompt.obj_id)

    def clear_prompts(self, frame_idx: int, obj_id: int) -> None:
        """Forget one object's prompts (and corrections) on one frame; they stop taking
        effect at the next `propagate`. Raises UnknownObjectError for an id never prompted."""
        self._drop(self._check_frame(frame_idx), self._known(obj_id))

    def remove_object(self, obj_id: int) -> None:
        """Forget one object: its prompts, corrections and results. Raises
        UnknownObjectError for an id never prompted."""
        obj_id = self._known(obj_id)
        for frame_idx in {*self._prompts, *self._corrections}:
            self._drop(frame_idx, obj_id)
        self._obj_order.remove(obj_id)
        self._tracked.pop(obj_id, None)
        self.objects.pop(obj_id, None)

    def _drop(self, frame_idx: int, obj_id: int) -> None:
        for store in (self._prompts, self._corrections):
            kept = [p for p in store.get(frame_idx, ()) if p.obj_id != obj_id]
            if kept:
                store[frame_idx] = kept
            else:
                store.pop(frame_idx, None)

    def _known(self, obj_id) -> int:
        obj_id = check_obj_id(obj_id)
        if obj_id not in self._obj_order:
            raise UnknownObjectError(f"unknown object id {obj_id!r}; the video has objects "
                                     f"{self._obj_order}")
        return obj_id

    def _check_frame(self, frame_idx) -> int:
        frame_idx = check_int(frame_idx, "frame_idx")
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"frame index {frame_idx} is out of range: the video has "
                             f"{self.num_frames} frames (0..{self.num_frames - 1})")
        return frame_idx

    # -------------------------------------------------------------- tracking
    def propagation_length(self) -> int:
        """How many results `propagate` yields (the earliest prompted frame twice when
        there is a backward pass)."""
        first = self._first_prompted()
        return self.num_frames - first + (first + 1 if first > 0 else 0)

    def _first_prompted(self) -> int:
        if not self._prompts:
            raise PromptError("no object has a prompt: add points, a box or a mask first")
        prompted = {p.obj_id for prompts in self._prompts.values() for p in prompts}
        missing = [obj_id for obj_id in self._obj_order if obj_id not in prompted]
        if missing:
            raise PromptError(f"object {missing[0]} has no prompt left: prompt it again or "
                              f"remove it (remove_object({missing[0]}))")
        return min(self._prompts)

    def propagate(self) -> Iterator[TrackedFrame]:
        """Track every object: ``(frame_idx, obj_ids, masks)`` for the frames from the
        earliest prompted one to the last, then from it back to frame 0 (when it is not
        frame 0). masks: [num_objects, 1, H, W] float32 logits at the source resolution."""
        first = self._first_prompted()
        stepper = GraphStepper(self._predictor.tracker.graphs, self.num_frames,
                               self._predictor.tracker.fill_hole_area)
        self.objects = OrderedDict((obj_id, ObjectState(obj_id)) for obj_id in self._obj_order)
        self._decode_prompts(stepper)
        # What the backward pass, starting at `first`, reads of the forward pass.
        _, reach = stepper.memory.reach(first, self.num_frames, reverse=True)
        keep = range(first + 1, first + reach + 1) if first > 0 else range(0)
        for frame_idx, image in self._forward_frames(first):
            yield self._step(stepper, frame_idx, image, reverse=False, keep=keep)
        if first > 0:
            for frame_idx, image in self._backward_frames(first):
                yield self._step(stepper, frame_idx, image, reverse=True, keep=range(0))

    def _step(self, stepper: GraphStepper, frame_idx: int, image: np.ndarray, *,
              reverse: bool, keep: range) -> TrackedFrame:
        """One frame: prompted objects show their prompted output, the others are tracked
        and then corrected where a correction was given on this frame."""
        objects = self.objects.values()
        stepper.memory.forget(objects, frame_idx, self.num_frames, reverse=reverse, keep=keep)
        to_track = [obj for obj in objects if frame_idx not in obj.cond_outputs]
        if to_track:
            feats = self._encode(stepper, frame_idx, image)
            stepper.track(to_track, frame_idx, feats, reverse)
            for obj in to_track:
                if obj.obj_id not in self._tracked:
                    self._tracked[obj.obj_id] = np.zeros(self.num_frames, dtype=bool)
                self._tracked[obj.obj_id][frame_idx] = True
            corrections = self._corrections.get(frame_idx, ())
            for prompt in corrections:
                stepper.apply_prompt(self.objects[prompt.obj_id], frame_idx, feats, prompt,
                                     reverse)
            if corrections:
                stepper.commit(to_track, frame_idx, feats)
        return frame_result(objects, frame_idx, (self.video_height, self.video_width),
                            self._predictor.tracker.non_overlap_masks)

    def _decode_prompts(self, stepper: GraphStepper) -> None:
        """Each prompted frame's prompts in the order given, then its memories."""
        preprocess = self._predictor.tracker.preprocess
        last = max(self._prompts)
        with closing(open_source(self._video)) as source:
            for frame_idx, frame in self._read(source, 0, last + 1):
                prompts = self._prompts.get(frame_idx)
                if not prompts:
                    continue
                feats = self._encode(stepper, frame_idx, preprocess(frame))
                for prompt in prompts:
                    stepper.apply_prompt(self.objects[prompt.obj_id], frame_idx, feats, prompt)
                stepper.commit(self.objects.values(), frame_idx, feats)

    def _encode(self, stepper: GraphStepper, frame_idx: int,
                image: np.ndarray) -> FrameFeatures:
        """A frame's features: kept ones, else encoded (and kept while the budget allows).
        Kept frames are never dropped for newer ones: every pass visits every frame in the
        same order, so a least-recently-used cache smaller than the video would drop each
        frame just before it is needed again."""
        kept = self._features.get(frame_idx)
        if kept is not None:
            return FrameFeatures(*kept)
        feats = stepper.encode_image(image)
        arrays = (feats.image_embed, feats.high_res_0, feats.high_res_1, feats.pos_enc)
        size = sum(a.nbytes for a in arrays)
        if self._feature_bytes + size <= self._predictor.feature_cache_bytes:
            self._features[frame_idx] = arrays
            self._feature_bytes += size
        return feats

    def _forward_frames(self, first: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, model input) of frames first..T-1, read ahead in a thread."""
        tracker = self._predictor.tracker
        source = open_source(self._video)
        inputs = None
        try:
            for _ in self._read(source, 0, first):
                pass
            inputs = ModelInputs(source, tracker.preprocess, tracker.prefetch)
            for frame_idx in range(first, self.num_frames):
                image = inputs.next()
                if image is None:
                    raise self._ended(frame_idx)
                yield frame_idx, image
        finally:
            # The inputs close the source (their thread, when there is one, reads it).
            if inputs is not None:
                inputs.close()
            else:
                source.close()

    def _backward_frames(self, first: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, model input) of frames first..0: chunks of decoded frames, each read
        from the start of the source."""
        preprocess = self._predictor.tracker.preprocess
        frame_bytes = self.video_height * self.video_width * 3
        chunk = max(1, self._predictor.reverse_chunk_bytes // frame_bytes)
        hi = first
        while hi >= 0:
            lo = max(0, hi - chunk + 1)
            with closing(open_source(self._video)) as source:
                frames = [frame for idx, frame in self._read(source, 0, hi + 1) if idx >= lo]
            for frame_idx in range(hi, lo - 1, -1):
                yield frame_idx, preprocess(frames.pop())
            hi = lo - 1

    def _read(self, source: FrameSource, start: int,
              stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames start..stop-1 of a source read from its beginning (earlier ones skipped)."""
        for frame_idx in range(stop):
            frame = source.next_frame()
            if frame is None:
                raise self._ended(frame_idx)
            if frame_idx >= start:
                yield frame_idx, frame

    def _ended(self, frame_idx: int) -> VideoReadError:
        return VideoReadError(f"{self._name}: frame {frame_idx} could not be read (the video "
                              f"was counted as {self.num_frames} frames)")

    # ----------------------------------------------------------------- state
    def frame_signals(self, frame_idx: int) -> dict[int, FrameSignals]:
        """Each object's signals on a frame `propagate` has just yielded (its newest
        result there); objects without an output there are left out."""
        return signals_at(self.objects.values(), frame_idx)

    def retained_memories(self) -> int:
        """Spatial memories held over all objects (during or after `propagate`)."""
        return count_memories(self.objects.values())

    def retained_features(self) -> int:
        """Frames whose image features are kept (see ``feature_cache_bytes``)."""
        return len(self._features)

    def retained_outputs(self) -> int:
        """Per-frame outputs held over all objects (during or after `propagate`)."""
        return count_outputs(self.objects.values())
