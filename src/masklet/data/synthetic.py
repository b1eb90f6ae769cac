"""Deterministic synthetic videos for video object segmentation tests and training.

A video shows textured objects over a textured, slowly panning background. Objects
move, scale and rotate; they occlude each other in a fixed depth order; some leave the
frame and come back; look-alike distractors (exact copies of an object's shape and
texture) move around but are not tracked (they are background, id 0, in the masks).
Everything derives from the seed: the same (seed, config) gives identical videos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from masklet.data.synthetic_shapes import (
    Shape,
    Texture,
    random_background,
    random_shape,
    random_texture,
)

_PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """Size and content of a synthetic video.

    Attributes:
        num_frames, height, width: video size.
        num_objects: tracked objects (ids 1..num_objects).
        num_distractors: untracked look-alikes of randomly chosen objects.
        num_reentering: objects made to leave the frame completely mid-video and come back
            (needs num_frames >= 3); they are drawn in front so their return is visible.
            With two or more objects of which one stays in the frame, that one is also
            made to pass partly behind another object at the end of the video.
        min_radius, max_radius: object base radius range, fraction of min(height, width).
        scale_jitter: relative amplitude of the size oscillation over time.
        max_rotation: largest rotation speed, radians per frame.
        camera_pan: background travel over the video, fraction of max(height, width).
        noise_std: standard deviation of the per-pixel sensor noise (0 disables it).
        motion: how far an object travels towards each next random waypoint (1: all the
            way, the default; 0.25: a quarter, i.e. slower, DAVIS-like motion). Re-entering
            objects still leave the frame completely.
    """

    num_frames: int = 8
    height: int = 256
    width: int = 256
    num_objects: int = 3
    num_distractors: int = 1
    num_reentering: int = 1
    min_radius: float = 0.1
    max_radius: float = 0.2
    scale_jitter: float = 0.2
    max_rotation: float = 0.3
    camera_pan: float = 0.05
    noise_std: float = 2.0
    motion: float = 1.0

    def __post_init__(self) -> None:
        if min(self.num_frames, self.height, self.width, self.num_objects) < 1:
            raise ValueError("num_frames, height, width and num_objects must be >= 1")
        if min(self.num_distractors, self.num_reentering) < 0:
            raise ValueError("num_distractors and num_reentering must be >= 0")
        if self.num_reentering > self.num_objects:
            raise ValueError("num_reentering cannot exceed num_objects")
        if self.num_reentering and self.num_frames < 3:
            raise ValueError("leaving and re-entering the frame needs num_frames >= 3")
        if not 0 < self.min_radius <= self.max_radius <= 0.5:
            raise ValueError("need 0 < min_radius <= max_radius <= 0.5")
        if not 0 <= self.scale_jitter < 1 or self.camera_pan < 0 or self.noise_std < 0:
            raise ValueError("need 0 <= scale_jitter < 1, camera_pan >= 0 and noise_std >= 0")
        if not 0 <= self.motion <= 1:
            raise ValueError("need 0 <= motion <= 1")


@dataclass(frozen=True, eq=False)
class SyntheticVideo:
    """A generated video and its ground truth (T frames, N objects, D distractors).

    Attributes:
        frames: [T, H, W, 3] uint8.
        masks: [T, H, W] int32 object ids, 0 for background and distractors.
        visibility: [T, N] float32, visible fraction of each object's whole shape
            (0 when out of frame or fully hidden, below 1 when occluded or cut by the border).
        amodal_masks: [T, N, H, W] bool, each object's in-frame shape ignoring occlusion.
        distractor_masks: [T, D, H, W] bool, visible pixels of each distractor.
        distractor_sources: [D] id of the object each distractor imitates.
        reentering_ids: ids of the objects that leave the frame and come back.
        background: [T, H, W, 3] uint8, the background each frame was drawn on (no noise).
    """

    frames: np.ndarray
    masks: np.ndarray
    visibility: np.ndarray
    amodal_masks: np.ndarray
    distractor_masks: np.ndarray
    distractor_sources: tuple[int, ...]
    reentering_ids: tuple[int, ...]
    background: np.ndarray

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.visibility.shape[1] + 1))


@dataclass(frozen=True, eq=False)
class _Entity:
    """Something drawn on the frames: a tracked object (label > 0) or a distractor (label 0,
    ``imitates`` = the id of the object whose look it copies)."""

    label: int
    shape: Shape
    texture: Texture
    base_radius: float
    centers: np.ndarray  # [T, 2] (y, x) in pixels
    scales: np.ndarray  # [T]
    angles: np.ndarray  # [T] radians
    imitates: int = 0


def _keyframe_times(num_frames: int) -> np.ndarray:
    count = min(num_frames, max(3, 1 + math.ceil((num_frames - 1) / 5)))
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(int))


def _ease(keys: np.ndarray, times: np.ndarray, num_frames: int) -> np.ndarray:
    """Values [T, 2] passing through ``keys`` [K, 2] at ``times`` with cosine easing."""
    t = np.arange(num_frames)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, max(len(times) - 2, 0))
    if len(times) == 1:
        return np.repeat(keys[:1], num_frames, axis=0)
    span = times[seg + 1] - times[seg]
    phase = (1 - np.cos(np.pi * (t - times[seg]) / span)) / 2
    return keys[seg] + phase[:, None] * (keys[seg + 1] - keys[seg])


def _inside_points(rng: np.random.Generator, count: int, cfg: SyntheticVideoConfig) -> np.ndarray:
    low = np.array([0.15 * cfg.height, 0.15 * cfg.width])
    return low + rng.uniform(0, 1, size=(count, 2)) * (np.array([cfg.height, cfg.width]) - 2 * low)


def _waypoints(rng: np.random.Generator, count: int, cfg: SyntheticVideoConfig) -> np.ndarray:
    """Keyframe centres [count, 2]: random inside points, each reached only ``cfg.motion``
    of the way from the previous centre (the same random draws whatever the motion)."""
    points = _inside_points(rng, count, cfg)
    for k in range(1, count):
        points[k] = points[k - 1] + cfg.motion * (points[k] - points[k - 1])
    return points


def _outside_point(
    rng: np.random.Generator, side: int, reach: float, cfg: SyntheticVideoConfig
) -> np.ndarray:
    """A centre beyond frame edge ``side`` (top, bottom, left, right) from which a shape
    of radius ``reach`` lies wholly outside the frame."""
    margin = reach + 2.0
    along = _inside_points(rng, 1, cfg)[0]
    if side == 0:
        return np.array([-margin, along[1]])
    if side == 1:
        return np.array([cfg.height - 1 + margin, along[1]])
    if side == 2:
        return np.array([along[0], -margin])
    return np.array([along[0], cfg.width - 1 + margin])


def _random_entity(
    rng: np.random.Generator, label: int, cfg: SyntheticVideoConfig, model: _Entity | None = None
) -> _Entity:
    """A new entity on a random path; with ``model``, a distractor copying its look."""
    if model is None:
        shape, texture = random_shape(rng), random_texture(rng)
    else:
        shape, texture = model.shape, model.texture
    times = _keyframe_times(cfg.num_frames)
    t = np.arange(cfg.num_frames)
    scales = 1 + cfg.scale_jitter * np.sin(rng.uniform(0.3, 1.2) * t + rng.uniform(0, 2 * np.pi))
    return _Entity(
        label=label,
        shape=shape,
        texture=texture,
        base_radius=float(rng.uniform(cfg.min_radius, cfg.max_radius) * min(cfg.height, cfg.width)),
        centers=_ease(_waypoints(rng, len(times), cfg), times, cfg.num_frames),
        scales=scales,
        angles=rng.uniform(0, 2 * np.pi) + rng.uniform(-1, 1) * cfg.max_rotation * t,
        imitates=0 if model is None else model.label,
    )


def _with_keyframe(entity: _Entity, index: int, center: np.ndarray, num_frames: int) -> _Entity:
    """The entity with keyframe ``index`` of its path moved to ``center``."""
    times = _keyframe_times(num_frames)
    keys = entity.centers[times].copy()
    keys[index] = center
    return replace(entity, centers=_ease(keys, times, num_frames))


def _make_reenter(rng: np.random.Generator, entity: _Entity, cfg: SyntheticVideoConfig) -> _Entity:
    """Send the entity out of the frame mid-video: the middle keyframe (the middle two on
    longer paths) moves beyond one edge, so the frames between them are empty too."""
    count = len(_keyframe_times(cfg.num_frames))
    middle = [count // 2] if count < 5 else [count // 2, count // 2 + 1]
    side = int(rng.integers(4))
    # The largest size the entity reaches, so that in-between frames stay outside as well.
    reach = entity.base_radius * (1 + cfg.scale_jitter)
    for index in middle:
        entity = _with_keyframe(
            entity, index, _outside_point(rng, side, reach, cfg), cfg.num_frames
        )
    return entity


def _make_overlap(
    rng: np.random.Generator, front: _Entity, back: _Entity, cfg: SyntheticVideoConfig
) -> _Entity:
    """``back`` moved so that, at the last keyframe, ``front`` partly covers it."""
    last = _keyframe_times(cfg.num_frames)[-1]
    inner = [e.shape.inner_radius() * e.base_radius * e.scales[last] for e in (front, back)]
    # Closer than the sum of the inscribed radii guarantees an overlap.
    distance = 0.6 * sum(inner)
    target = front.centers[last]
    toward_middle = np.arctan2(cfg.height / 2 - target[0], cfg.width / 2 - target[1])
    angle = toward_middle + rng.uniform(-np.pi / 3, np.pi / 3)
    center = target + distance * np.array([np.sin(angle), np.cos(angle)])
    return _with_keyframe(back, len(_keyframe_times(cfg.num_frames)) - 1, center, cfg.num_frames)


def _reach(entity: _Entity, t: int) -> float:
    """Radius of a disk around the centre that contains the whole shape at frame ``t``."""
    return float(entity.base_radius * entity.scales[t])


def _spread_out(
    rng: np.random.Generator, entities: list[_Entity], cfg: SyntheticVideoConfig
) -> list[_Entity]:
    """Re-place the first and last keyframes so no entity covers another's centre there.

    Re-entering objects are drawn in front of everything else; with their centres
    uncovered they are visible when the video starts and ends. Placement is retried a
    bounded number of times, so a crowded configuration may keep an overlap.
    """
    times = _keyframe_times(cfg.num_frames)
    placed: list[_Entity] = []
    for entity in entities:
        for index in (0, len(times) - 1):
            t = times[index]
            center = entity.centers[t]
            for _ in range(_PLACEMENT_TRIES):
                gaps = [
                    np.hypot(*(center - o.centers[t])) - max(_reach(entity, t), _reach(o, t))
                    for o in placed
                ]
                if min(gaps, default=1.0) > 0:
                    break
                center = _inside_points(rng, 1, cfg)[0]
            entity = _with_keyframe(entity, index, center, cfg.num_frames)
        placed.append(entity)
    return placed


def _render(
    entity: _Entity, t: int, height: int, width: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, int]:
    """Draw ``entity`` at frame ``t``.

    Returns:
        region: (rows, cols) slices of the frame covered by the clipped bounding box.
        inside: [h, w] bool, the shape within ``region``.
        colors: [n, 3] float, texture colour of each ``inside`` pixel (row-major order).
        full_area: pixel count of the whole shape, including any part outside the frame.
    """
    cy, cx = entity.centers[t]
    size = entity.base_radius * entity.scales[t]
    y0, x0 = math.floor(cy - size) - 1, math.floor(cx - size) - 1
    dy = np.arange(y0, math.ceil(cy + size) + 2)[:, None] - cy
    dx = np.arange(x0, math.ceil(cx + size) + 2)[None, :] - cx
    cos, sin = math.cos(entity.angles[t]), math.sin(entity.angles[t])
    # Object coordinates: undo the rotation and scale so texture and outline move rigidly.
    u = (dx * cos + dy * sin) / size
    v = (dy * cos - dx * sin) / size
    whole = np.hypot(u, v) <= entity.shape.radius(np.arctan2(v, u))
    rows = slice(min(max(y0, 0), height), min(max(y0 + whole.shape[0], 0), height))
    cols = slice(min(max(x0, 0), width), min(max(x0 + whole.shape[1], 0), width))
    local = (slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0))
    inside = whole[local]
    colors = entity.texture.colorize(u[local][inside], v[local][inside])
    return (rows, cols), inside, colors, int(np.count_nonzero(whole))


def _depth_order(
    rng: np.random.Generator,
    entities: list[_Entity],
    reentering: set[int],
    pair: tuple[int, int] | None,
) -> list[_Entity]:
    """Front-to-back order: random, except re-entering objects lead (so their return is
    seen) and the chosen occluder stands right in front of its occludee."""
    order = [entities[i] for i in rng.permutation(len(entities))]
    order.sort(key=lambda e: e.label not in reentering)
    if pair is not None:
        labels = [e.label for e in order]
        front, back = labels.index(pair[0]), labels.index(pair[1])
        if front > back:
            order.insert(back, order.pop(front))
    return order


def _build_entities(
    rng: np.random.Generator, cfg: SyntheticVideoConfig
) -> tuple[list[_Entity], tuple[int, ...]]:
    objects = [_random_entity(rng, label, cfg) for label in range(1, cfg.num_objects + 1)]
    reentering = tuple(
        sorted(int(i) + 1 for i in rng.choice(cfg.num_objects, cfg.num_reentering, replace=False))
    )
    for label in reentering:
        objects[label - 1] = _make_reenter(rng, objects[label - 1], cfg)
    for entity in _spread_out(rng, [objects[label - 1] for label in reentering], cfg):
        objects[entity.label - 1] = entity
    pair = None
    steady = [o.label for o in objects if o.label not in reentering]
    if cfg.num_objects >= 2 and steady:
        # Moving the hidden (steady) object keeps the re-entering objects' paths intact.
        back = int(rng.choice(steady))
        front = int(rng.choice([o.label for o in objects if o.label != back]))
        objects[back - 1] = _make_overlap(rng, objects[front - 1], objects[back - 1], cfg)
        pair = (front, back)
    sources = rng.integers(1, cfg.num_objects + 1, size=cfg.num_distractors)
    distractors = [_random_entity(rng, 0, cfg, model=objects[s - 1]) for s in sources]
    entities = _depth_order(rng, objects + distractors, set(reentering), pair)
    return entities, reentering


def _backgrounds(rng: np.random.Generator, cfg: SyntheticVideoConfig) -> np.ndarray:
    """[T, H, W, 3] float: crops of one larger plate sliding linearly (a camera pan)."""
    pad = math.ceil(cfg.camera_pan * max(cfg.height, cfg.width))
    plate = random_background(rng, cfg.height + 2 * pad, cfg.width + 2 * pad)
    start, end = rng.integers(0, 2 * pad + 1, size=(2, 2))
    steps = np.linspace(0, 1, cfg.num_frames)[:, None]
    offsets = np.round(start + steps * (end - start)).astype(int)
    return np.stack([plate[y : y + cfg.height, x : x + cfg.width] for y, x in offsets])


def _composite(
    entities: list[_Entity], backgrounds: np.ndarray, cfg: SyntheticVideoConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paint the entities (front-to-back list) back to front over the backgrounds.

    Returns:
        images: [T, H, W, 3] float.
        owner: [T, H, W] int64, index into ``entities`` of the visible entity, -1 for none.
        amodal: [T, N, H, W] bool, each object's in-frame shape.
        full_area: [T, N] int64, each object's whole shape area, in or out of the frame.
    """
    shape = (cfg.num_frames, cfg.height, cfg.width)
    images = backgrounds.copy()
    owner = np.full(shape, -1, dtype=np.int64)
    amodal = np.zeros((cfg.num_frames, cfg.num_objects, cfg.height, cfg.width), dtype=bool)
    full_area = np.zeros((cfg.num_frames, cfg.num_objects), dtype=np.int64)
    for index in reversed(range(len(entities))):
        entity = entities[index]
        for t in range(cfg.num_frames):
            region, inside, colors, area = _render(entity, t, cfg.height, cfg.width)
            images[t][region][inside] = colors
            owner[t][region][inside] = index
            if entity.label:
                amodal[t, entity.label - 1][region] = inside
                full_area[t, entity.label - 1] = area
    return images, owner, amodal, full_area


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def generate_video(seed: int, config: SyntheticVideoConfig | None = None) -> SyntheticVideo:
    """Generate the synthetic video of ``seed`` (same seed and config -> same video)."""
    cfg = config if config is not None else SyntheticVideoConfig()
    rng = np.random.default_rng(seed)
    entities, reentering = _build_entities(rng, cfg)
    backgrounds = _backgrounds(rng, cfg)
    images, owner, amodal, full_area = _composite(entities, backgrounds, cfg)
    labels = np.array([e.label for e in entities] + [0], dtype=np.int32)
    masks = labels[owner]  # owner -1 picks the trailing 0: background
    visible = np.stack(
        [(masks == i).sum(axis=(1, 2)) for i in range(1, cfg.num_objects + 1)], axis=1
    )
    distractors = [i for i, e in enumerate(entities) if e.label == 0]
    distractor_masks = np.zeros(
        (cfg.num_frames, len(distractors), cfg.height, cfg.width), dtype=bool
    )
    for column, index in enumerate(distractors):
        distractor_masks[:, column] = owner == index
    if cfg.noise_std > 0:
        images = images + rng.normal(0, cfg.noise_std, size=images.shape)
    return SyntheticVideo(
        frames=_to_uint8(images),
        masks=masks,
        visibility=(visible / np.maximum(full_area, 1)).astype(np.float32),
        amodal_masks=amodal,
        distractor_masks=distractor_masks,
        distractor_sources=tuple(entities[i].imitates for i in distractors),
        reentering_ids=reentering,
        background=_to_uint8(backgrounds),
    )
