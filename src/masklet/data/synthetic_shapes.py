"""Random shapes, textures and backgrounds for the synthetic video generator.

Every shape is star-shaped around its centre and described by its boundary radius as a
function of angle, in units of the object's base radius (at most 1). Textures are
functions of the object's own coordinates, so they move, turn and scale with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_KINDS = ("ellipse", "blob", "polygon")
TEXTURE_KINDS = ("stripes", "checker", "rings", "gradient")


@dataclass(frozen=True)
class Shape:
    """A star-shaped outline: boundary radius r(angle) <= 1.

    ``params`` depend on ``kind``: ellipse (aspect,), blob (amplitudes..., phases...),
    polygon (vertex angles..., vertex radii...).
    """

    kind: str
    params: tuple[float, ...]

    def radius(self, angle: np.ndarray) -> np.ndarray:
        """Boundary radius at each angle (radians): same shape as ``angle``."""
        p = np.asarray(self.params)
        if self.kind == "ellipse":
            return 1.0 / np.sqrt(np.cos(angle) ** 2 + (np.sin(angle) / p[0]) ** 2)
        if self.kind == "blob":
            half = len(p) // 2
            harmonics = np.arange(2, 2 + half)
            wave = (
                p[:half, None] * np.cos(harmonics[:, None] * angle.ravel() + p[half:, None])
            ).sum(0)
            return ((1.0 + wave) / (1.0 + p[:half].sum())).reshape(angle.shape)
        return _polygon_radius(angle, p[: len(p) // 2], p[len(p) // 2 :])

    def inner_radius(self) -> float:
        """Smallest boundary radius: a disk of this radius lies inside the shape."""
        return float(self.radius(np.linspace(-np.pi, np.pi, 721)).min())


def _polygon_radius(
    angle: np.ndarray, vertex_angles: np.ndarray, vertex_radii: np.ndarray
) -> np.ndarray:
    """Distance from the centre to the polygon edge along each direction."""
    vx = vertex_radii * np.cos(vertex_angles)
    vy = vertex_radii * np.sin(vertex_angles)
    # Vertex angles are sorted in [-pi, pi); the edge hit by a ray starts at the last
    # vertex whose angle does not exceed the ray's (wrapping to the final vertex).
    start = np.searchsorted(vertex_angles, angle, side="right") - 1
    end = (start + 1) % len(vertex_angles)
    ax, ay, bx, by = vx[start], vy[start], vx[end], vy[end]
    dx, dy = np.cos(angle), np.sin(angle)
    # The ray t*(dx, dy) meets segment A->B where t = cross(A, B) / cross(d, B - A).
    return (ax * by - ay * bx) / (dx * (by - ay) - dy * (bx - ax))


def random_shape(rng: np.random.Generator) -> Shape:
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    if kind == "ellipse":
        return Shape(kind, (float(rng.uniform(0.45, 1.0)),))
    if kind == "blob":
        amplitudes = rng.uniform(0.0, 0.18, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        return Shape(kind, tuple(np.concatenate([amplitudes, phases]).tolist()))
    count = int(rng.integers(3, 8))
    # Jittered but evenly spread vertex angles keep every edge under half a turn, so each
    # ray meets exactly one edge and the radius never exceeds the largest vertex radius.
    angles = -np.pi + (np.arange(count) + rng.uniform(0.3, 0.7, size=count)) * (2 * np.pi / count)
    radii = rng.uniform(0.65, 1.0, size=count)
    return Shape(kind, tuple(np.concatenate([angles, radii]).tolist()))


@dataclass(frozen=True)
class Texture:
    """Two colours mixed by a pattern of the object's own coordinates."""

    kind: str
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    frequency: float
    direction: float

    def colorize(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """RGB [..., 3] float for object coordinates u, v (units of the base radius)."""
        along = u * np.cos(self.direction) + v * np.sin(self.direction)
        if self.kind == "stripes":
            weight = 0.5 + 0.5 * np.sin(self.frequency * along)
        elif self.kind == "checker":
            cells = np.floor(self.frequency * u / np.pi) + np.floor(self.frequency * v / np.pi)
            weight = np.mod(cells, 2.0)
        elif self.kind == "rings":
            weight = 0.5 + 0.5 * np.cos(self.frequency * np.hypot(u, v))
        else:
            weight = np.clip(0.5 + 0.5 * along, 0.0, 1.0)
        first, second = (np.asarray(c) for c in self.colors)
        return first + weight[..., None] * (second - first)


def random_texture(rng: np.random.Generator) -> Texture:
    first = rng.uniform(0, 255, size=3)
    # Push the second colour away from the first so the pattern is visible.
    second = np.clip(255 - first + rng.uniform(-60, 60, size=3), 0, 255)
    return Texture(
        kind=TEXTURE_KINDS[rng.integers(len(TEXTURE_KINDS))],
        colors=(tuple(first.tolist()), tuple(second.tolist())),
        frequency=float(rng.uniform(4.0, 12.0)),
        direction=float(rng.uniform(0, np.pi)),
    )


def _bilinear_upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [h, w, C] to [height, width, C] by bilinear interpolation (corners aligned)."""
    h, w = grid.shape[:2]
    ys = np.linspace(0, h - 1, height)
    xs = np.linspace(0, w - 1, width)
    y0 = np.minimum(ys.astype(int), h - 2)
    x0 = np.minimum(xs.astype(int), w - 2)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
    bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured plate [height, width, 3] float in [0, 255]: gradient, stripes and blotches."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0, 255, size=(2, 3))
    plate = start + ramp * (end - start)
    stripe_angle = rng.uniform(0, np.pi)
    stripes = np.sin(rng.uniform(20, 60) * (np.cos(stripe_angle) * xs + np.sin(stripe_angle) * ys))
    plate += rng.uniform(5, 25) * stripes[..., None]
    cells = int(rng.integers(4, 10))
    blotches = rng.normal(0, 1, size=(cells + 1, cells + 1, 3))
    plate += rng.uniform(10, 35) * _bilinear_upsample(blotches, height, width)
    return np.clip(plate, 0, 255)
