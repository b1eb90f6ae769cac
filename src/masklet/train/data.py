"""Training data: clip sources and the deterministic per-step batch stream.

A source turns an index into a `Clip`: ``num_frames`` consecutive annotated frames of a
video (or one image) and up to ``max_objects`` objects visible on its first frame (the
official RandomUniformSampler). `TrainStream` decides, for every step and slot of the
global batch, which source and which item to use and augments it. Every choice is a
function of (seed, step, slot) only, so a run resumed at step s draws exactly what the
uninterrupted run drew, and N processes together draw what one process would.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from masklet.data import (
    SyntheticVideoConfig,
    VOSDataset,
    generate_video,
    load_sa1b,
    load_sav,
)
from masklet.data.png import load_rgb
from masklet.train.augment import TrainSample, augment_clip
from masklet.train.config import AugmentConfig, DataSource

_WINDOW_TRIES = 20  # clip starts tried before a video counts as having no visible object
_ITEM_TRIES = 20  # items tried before giving up on a source


class NoVisibleObject(ValueError):
    """The sampled item has no object to prompt on its first frame."""


@dataclass
class Clip:
    """frames: [T, H, W, 3] uint8; masks: [T, O, H, W] bool (O >= 1)."""

    frames: np.ndarray
    masks: np.ndarray
    name: str


class ClipSource(Protocol):
    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> Clip: ...


def pick_objects(first: np.ndarray, rng: np.random.Generator, max_objects: int) -> list[int]:
    """Random subset (in index order) of the objects visible in ``first`` [N, H, W] bool."""
    visible = np.flatnonzero(first.reshape(first.shape[0], -1).any(-1))
    if visible.size == 0:
        raise NoVisibleObject("no object is visible on the first frame")
    chosen = rng.choice(visible, size=min(max_objects, visible.size), replace=False)
    return sorted(int(i) for i in chosen)


def _ids_to_masks(ids: np.ndarray, object_ids: list[int]) -> np.ndarray:
    """[..., H, W] id maps -> [..., O, H, W] bool."""
    return np.stack([ids == i for i in object_ids], axis=-3)


def _present_ids(id_map: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(id_map) if i]


def _window(available: int, num_frames: int, rng: np.random.Generator, name: str) -> int:
    if available < num_frames:
        raise NoVisibleObject(f"{name} has {available} annotated frames, fewer than {num_frames}")
    return int(rng.integers(0, available - num_frames + 1))


class SyntheticSource:
    """Videos from `masklet.data.generate_video`, generated at the model's input size."""

    def __init__(self, *, num_videos: int, video_frames: int, size: int, num_frames: int,
                 max_objects: int, seed: int, cache_size: int = 32, motion: float = 1.0) -> None:
        self.num_videos = num_videos
        self.config = SyntheticVideoConfig(num_frames=video_frames, height=size, width=size,
                                           motion=motion)
        self.num_frames, self.max_objects, self.seed = num_frames, max_objects, seed
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return self.num_videos

    def video_seed(self, index: int) -> int:
        """The `generate_video` seed of video ``index`` (distinct runs seeds, distinct
        videos)."""
        return self.seed * 1_000_003 + index

    def _video(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            video = generate_video(self.video_seed(index), self.config)
            self._cache[index] = (video.frames, video.masks)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(index)
        return self._cache[index]

    def sample(self, index: int, rng: np.random.Generator) -> Clip:
        frames, ids = self._video(index)
        start = _window(len(frames), self.num_frames, rng, f"synthetic video {index}")
        window = slice(start, start + self.num_frames)
        object_ids = _present_ids(ids[start])
        if not object_ids:
            raise NoVisibleObject(f"synthetic video {index}: no object on frame {start}")
        chosen = pick_objects(_ids_to_masks(ids[start], object_ids), rng, self.max_objects)
        masks = _ids_to_masks(ids[window], [object_ids[i] for i in chosen])
        return Clip(frames[window], masks, f"synthetic/{index}@{start}")


class VOSSource:
    """A DAVIS / YouTube-VOS folder; clips run over consecutive annotated frames."""

    def __init__(self, root: str, *, num_frames: int, max_objects: int) -> None:
        self.dataset = VOSDataset(root)
        self.num_frames, self.max_objects = num_frames, max_objects

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, rng: np.random.Generator) -> Clip:
        seq = self.dataset[index]
        ann_frames = seq.annotated_frame_indices
        for _ in range(_WINDOW_TRIES):
            start = _window(len(ann_frames), self.num_frames, rng, seq.name)
            first = seq.load_mask(start)
            object_ids = _present_ids(first)
            if object_ids:
                break
        else:
            raise NoVisibleObject(f"{seq.name}: no object on the first frame of any clip tried")
        chosen = pick_objects(_ids_to_masks(first, object_ids), rng, self.max_objects)
        keep = [object_ids[i] for i in chosen]
        anns = range(start, start + self.num_frames)
        frames = np.stack([seq.load_image(ann_frames[k]) for k in anns])
        masks = np.stack([_ids_to_masks(seq.load_mask(k), keep) for k in anns])
        return Clip(frames, masks, f"{seq.name}@{start}")


class SavSource:
    """SA-V: ``*.json`` masklets in ``path``, frames ``frames_path/<video_id>/NNNNN.jpg``
    named by video frame index (annotated frame k is video frame k * stride)."""

    def __init__(self, path: str, frames_path: str, *, num_frames: int, max_objects: int):
        self.json_paths = sorted(Path(path).glob("*.json"))
        if not self.json_paths:
            raise ValueError(f"no SA-V annotation JSON files in {path}")
        self.frames_path = Path(frames_path)
        self.num_frames, self.max_objects = num_frames, max_objects

    def __len__(self) -> int:
        return len(self.json_paths)

    def sample(self, index: int, rng: np.random.Generator) -> Clip:
        video = load_sav(self.json_paths[index])
        visible = video.visibility()  # [K, N]
        for _ in range(_WINDOW_TRIES):
            start = _window(video.num_annotated_frames, self.num_frames, rng, video.video_id)
            if visible[start].any():
                break
        else:
            raise NoVisibleObject(f"{video.video_id}: no object on the first frame of any clip")
        keep = pick_objects(visible[start][:, None, None], rng, self.max_objects)
        anns = range(start, start + self.num_frames)
        folder = self.frames_path / video.video_id
        frames = np.stack(
            [load_rgb(folder / f"{video.video_frame_indices[k]:05d}.jpg") for k in anns]
        )
        masks = np.stack([video.decode_frame(k)[keep] for k in anns])
        return Clip(frames, masks, f"{video.video_id}@{start}")


class Sa1bSource:
    """SA-1B style images (``sa_N.jpg`` + ``sa_N.json``): one-frame clips."""

    def __init__(self, path: str, *, max_objects: int) -> None:
        self.json_paths = sorted(Path(path).glob("*.json"))
        if not self.json_paths:
            raise ValueError(f"no SA-1B annotation JSON files in {path}")
        self.max_objects = max_objects

    def __len__(self) -> int:
        return len(self.json_paths)

    def sample(self, index: int, rng: np.random.Generator) -> Clip:
        image = load_sa1b(self.json_paths[index])
        areas = np.array([a.area for a in image.annotations])
        keep = pick_objects(areas[:, None, None] > 0, rng, self.max_objects)
        masks = image.decode_masks(keep)
        return Clip(image.load_image()[None], masks[None], image.file_name)


def build_source(spec: DataSource, *, size: int, num_frames: int, max_objects: int,
                 seed: int) -> ClipSource:
    """The `ClipSource` a `DataSource` describes."""
    objects = spec.max_objects or max_objects
    if spec.kind == "synthetic":
        return SyntheticSource(num_videos=spec.num_videos,
                               video_frames=spec.video_frames or num_frames, size=size,
                               num_frames=num_frames, max_objects=objects, seed=seed,
                               motion=spec.motion)
    if spec.kind == "vos":
        return VOSSource(spec.path, num_frames=num_frames, max_objects=objects)
    if spec.kind == "sav":
        if not spec.frames_path:
            raise ValueError("an 'sav' data source needs frames_path")
        return SavSource(spec.path, spec.frames_path, num_frames=num_frames,
                         max_objects=objects)
    return Sa1bSource(spec.path, max_objects=objects)


class TrainStream:
    """Which samples each step trains on, for this process.

    Sources take turns by weight (weights 3 and 1 give three batches of the first, then
    one of the second, and so on); within a source, items follow a fresh permutation
    every epoch. A process takes a contiguous shard of every global batch.
    """

    def __init__(self, sources: list[tuple[ClipSource, int]], *, seed: int, batch_size: int,
                 size: int, augment: AugmentConfig, slots: range) -> None:
        self.sources = [s for s, _ in sources]
        self.cycle = [i for i, (_, weight) in enumerate(sources) for _ in range(weight)]
        self.seed, self.batch_size, self.size = seed, batch_size, size
        self.augment, self.slots = augment, slots
        self._perms: dict[int, tuple[int, np.ndarray]] = {}  # source -> (epoch, order)

    def source_of(self, step: int) -> tuple[int, int]:
        """(source index, how many earlier steps used that source)."""
        cycles, pos = divmod(step, len(self.cycle))
        src = self.cycle[pos]
        return src, cycles * self.cycle.count(src) + self.cycle[:pos].count(src)

    def _item(self, src: int, position: int) -> int:
        epoch, offset = divmod(position, len(self.sources[src]))
        if self._perms.get(src, (None,))[0] != epoch:
            order = np.random.default_rng([self.seed, src, epoch]).permutation(
                len(self.sources[src]))
            self._perms[src] = (epoch, order)
        return int(self._perms[src][1][offset])

    def sample(self, step: int, slot: int) -> TrainSample:
        """The augmented sample at ``slot`` of the global batch of ``step``."""
        src, ordinal = self.source_of(step)
        source = self.sources[src]
        rng = np.random.default_rng([self.seed, step, slot])
        index = self._item(src, ordinal * self.batch_size + slot)
        for _ in range(_ITEM_TRIES):
            try:
                clip = source.sample(index, rng)
                break
            except NoVisibleObject:
                index = int(rng.integers(len(source)))  # as the official: try another item
        else:
            raise RuntimeError(f"no usable item found in data source {src}")
        return augment_clip(clip.frames, clip.masks, self.size, self.augment, rng, clip.name)

    def local_batch(self, step: int) -> list[tuple[int, TrainSample]]:
        """(global slot, sample) pairs of this process for ``step``."""
        return [(slot, self.sample(step, slot)) for slot in self.slots]

    def loader(self, start: int, stop: int, num_workers: int) -> DataLoader:
        """Local batches of steps ``start .. stop - 1``, prepared by background workers."""
        return DataLoader(_Steps(self, start, stop), batch_size=None, shuffle=False,
                          num_workers=num_workers, collate_fn=_identity,
                          worker_init_fn=_single_thread if num_workers else None)


class _Steps(Dataset):
    def __init__(self, stream: TrainStream, start: int, stop: int) -> None:
        self.stream, self.start, self.stop = stream, start, stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, i: int) -> tuple[int, list[tuple[int, TrainSample]]]:
        step = self.start + i
        return step, self.stream.local_batch(step)


def _identity(x):
    return x


def _single_thread(_worker_id: int) -> None:
    # Workers share the cores with the training process; one thread each avoids
    # oversubscription.
    torch.set_num_threads(1)
