"""`VideoSession`: the typed inference state of one video (what `init_state` returns)."""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from masklet.io import FrameSource, preprocess_video_frame
from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.tracking.state import ObjectState


class UnknownObjectError(KeyError):
    """An object id that the session does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


@dataclass
class VideoSession:
    """Frames, objects and cached features of one video.

    Invariants:
        - ``objects`` is ordered by when each object was first prompted; that order is the
          order of ``obj_ids`` and of the first dimension of every returned mask tensor;
        - at most ``feature_cache_size`` frames' image features are held at once.
    """

    source: FrameSource
    num_frames: int
    video_height: int
    video_width: int
    device: torch.device
    objects: OrderedDict[int, ObjectState] = field(default_factory=OrderedDict)
    feature_cache_size: int = 2
    _features: OrderedDict[int, ImageFeatures] = field(default_factory=OrderedDict)

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    def check_frame(self, frame_idx: int) -> int:
        if isinstance(frame_idx, bool):
            raise TypeError("frame_idx must be an int, got bool")
        try:
            frame_idx = operator.index(frame_idx)
        except TypeError:
            raise TypeError(f"frame_idx must be an int, got {type(frame_idx).__name__}") from None
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(
                f"frame index {frame_idx} is out of range: the video has {self.num_frames} "
                f"frames (0..{self.num_frames - 1})"
            )
        return frame_idx

    def get_object(self, obj_id: int) -> ObjectState:
        try:
            return self.objects[obj_id]
        except KeyError:
            raise UnknownObjectError(
                f"unknown object id {obj_id!r}; the session holds {self.obj_ids}"
            ) from None

    def object_for_prompt(self, obj_id: int) -> ObjectState:
        """The object with this id, created when first prompted."""
        if obj_id not in self.objects:
            self.objects[obj_id] = ObjectState(obj_id)
        return self.objects[obj_id]

    def frame_features(self, model: SAM2Model, frame_idx: int) -> ImageFeatures:
        """Image features of a frame (batch 1), computed once and kept in a small LRU cache."""
        feats = self._features.get(frame_idx)
        if feats is None:
            rgb = self.source.get(frame_idx)
            image = preprocess_video_frame(rgb, model.image_size).to(self.device)
            feats = model.forward_image(image[None].to(model.dtype))
            self._features[frame_idx] = feats
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(frame_idx)
        return feats

    def close(self) -> None:
        self._features.clear()
        self.source.close()
