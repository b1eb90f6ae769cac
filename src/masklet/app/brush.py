"""Brush and eraser: paint or erase an object's mask on one frame with a round brush.

A stroke is a polyline in frame pixels swept by a disc of the brush radius (a "capsule"
around each segment). It is applied to the mask the user sees for that object on that
frame (its prompt mask, else its tracked mask, else nothing) and the result is stored as a
mask prompt (an action of kind 'mask', like an imported mask): tracking again starts from
it, undo and redo give it back exactly, and it survives a restart like any other edit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from masklet.app import store
from masklet.app.errors import AppError
from masklet.app.maskcodec import decode_rle, encode_rle
from masklet.app.store import Action

if TYPE_CHECKING:
    from masklet.app.service import AnnotationService

# Segments rasterised together: bounds the temporaries (rows x CHUNK floats each).
CHUNK = 128


def check_stroke(points: list[list[float]], radius: float, width: int, height: int,
                 max_points: int) -> np.ndarray:
    """Validated stroke points [N, 2] (x, y) in pixels; AppError 422 on anything wrong."""
    if not points:
        raise AppError(422, "a brush stroke needs at least one point")
    if len(points) > max_points:
        raise AppError(422, f"a brush stroke holds at most {max_points} points (got "
                            f"{len(points)}; --max-brush-points)")
    if not 0 < radius <= max(width, height):
        raise AppError(422, f"the brush radius must be > 0 and <= {max(width, height)} "
                            f"(the frame's larger side), got {radius:g}")
    if any(len(p) != 2 for p in points):
        raise AppError(422, "each brush point must be [x, y]")
    pts = np.asarray(points, dtype=np.float64)
    outside = ~((pts[:, 0] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0)
                & (pts[:, 1] <= height))
    if outside.any():
        x, y = pts[int(np.argmax(outside))]
        raise AppError(422, f"brush point ({x:g}, {y:g}) lies outside the {width}x{height} "
                            "frame")
    return pts


def _span(alpha: np.ndarray, beta: np.ndarray, lo: np.ndarray, hi: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """The x interval where lo <= alpha * x + beta <= hi (elementwise; empty: lo > hi)."""
    flat = np.abs(alpha) < 1e-12
    safe = np.where(flat, 1.0, alpha)
    a, b = (lo - beta) / safe, (hi - beta) / safe
    start, end = np.minimum(a, b), np.maximum(a, b)
    inside = (beta >= lo) & (beta <= hi)
    start = np.where(flat, np.where(inside, -np.inf, np.inf), start)
    end = np.where(flat, np.where(inside, np.inf, -np.inf), end)
    return start, end


def _capsule_rows(a: np.ndarray, b: np.ndarray, radius: float, cy: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """x intervals [rows, segs] of each segment's capsule on the lines y = cy [rows, 1].

    a, b: [segs, 2] segment ends. A capsule is convex, so its cut by a line is one
    interval: the hull of the cuts of its two end discs and of its middle band.
    """
    starts, ends = [], []
    for centre in (a, b):  # the end discs
        dy = cy - centre[None, :, 1]
        half = np.sqrt(np.maximum(radius**2 - dy**2, 0.0))
        hit = np.abs(dy) <= radius
        starts.append(np.where(hit, centre[None, :, 0] - half, np.inf))
        ends.append(np.where(hit, centre[None, :, 0] + half, -np.inf))
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])[None, :]
    ax, ay, dx, dy = a[None, :, 0], a[None, :, 1], d[None, :, 0], d[None, :, 1]
    zero = np.zeros_like(cy * dx)
    # Along the segment: 0 <= (q - a) . d <= |d|^2, with q = (x, cy).
    s1, e1 = _span(dx + zero, (cy - ay) * dy - ax * dx, zero, length**2 + zero)
    # Across it: |(q - a) x d| <= r |d|.
    s2, e2 = _span(dy + zero, -ax * dy - (cy - ay) * dx, -radius * length + zero,
                   radius * length + zero)
    band = (length > 0) & (np.maximum(s1, s2) <= np.minimum(e1, e2))
    starts.append(np.where(band, np.maximum(s1, s2), np.inf))
    ends.append(np.where(band, np.minimum(e1, e2), -np.inf))
    return np.minimum.reduce(starts), np.maximum.reduce(ends)


def stroke_mask(points: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """[H, W] bool: the pixels whose centre lies within `radius` of the polyline through
    `points` [N, 2] (x, y; one point: a disc), plus the pixel under each point (so that a
    brush thinner than a pixel still paints where it went)."""
    starts, ends = (points[:-1], points[1:]) if len(points) > 1 else (points, points)
    top = int(max(0, np.floor(points[:, 1].min() - radius - 1)))
    bottom = int(min(height, np.ceil(points[:, 1].max() + radius + 1)))
    rows = np.arange(top, bottom)
    cy = (rows + 0.5)[:, None]
    # +1 where a run of painted pixels starts in a row, -1 just after it ends: a running
    # sum along each row is then > 0 exactly on painted pixels.
    size = len(rows) * (width + 1)
    marks = np.zeros(size, dtype=np.int64)
    for i in range(0, len(starts), CHUNK):
        lo, hi = _capsule_rows(starts[i : i + CHUNK], ends[i : i + CHUNK], radius, cy)
        # Pixel j is in when its centre j + 0.5 is in [lo, hi].
        first = np.clip(np.ceil(np.where(np.isfinite(lo), lo, width) - 0.5), 0, width)
        last = np.clip(np.floor(np.where(np.isfinite(hi), hi, -1) - 0.5), -1, width - 1)
        keep = first <= last
        base = np.broadcast_to((np.arange(len(rows)) * (width + 1))[:, None], keep.shape)[keep]
        marks += np.bincount(base + first[keep].astype(np.intp), minlength=size)
        marks -= np.bincount(base + last[keep].astype(np.intp) + 1, minlength=size)
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom] = np.cumsum(marks.reshape(len(rows), width + 1), axis=1)[:, :width] > 0
    px = np.clip(points[:, 0].astype(np.intp), 0, width - 1)
    py = np.clip(points[:, 1].astype(np.intp), 0, height - 1)
    mask[py, px] = True
    return mask


class BrushEditor:
    """The brush operation of an `AnnotationService` (stored through its `PromptEditor`)."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc

    def shown_mask(self, video_id: int, frame: int, obj: int, height: int, width: int
                   ) -> np.ndarray:
        """The object's mask as the page shows it on the frame ([H, W] bool; empty if none)."""
        for row in store.shown_masks(self.svc.db, video_id, frame):
            if row["obj"] == obj:
                return decode_rle(row["rle"], height, width)
        return np.zeros((height, width), dtype=bool)

    def stroke(self, video_id: int, frame: int, obj: int, mode: str, radius: float,
               points: list[list[float]], expected_version: int | None = None) -> dict:
        """Paint (mode 'paint') or erase ('erase') one stroke; answers like a prompt.

        A stroke that changes no pixel stores nothing and answers the frame as it is.
        """
        svc = self.svc
        if mode not in ("paint", "erase"):
            raise AppError(422, f"mode must be 'paint' or 'erase', got {mode!r}")
        with svc.locked(video_id, expected_version) as row:
            media = svc.check_frame(video_id, frame)
            svc.object_row(video_id, obj)
            w, h = media.frame_size(frame)
            pts = check_stroke(points, radius, w, h, svc.config.max_brush_points)
            before = self.shown_mask(video_id, frame, obj, h, w)
            swept = stroke_mask(pts, radius, h, w)
            after = before | swept if mode == "paint" else before & ~swept
            if np.array_equal(after, before):
                return svc.frame_result(video_id, frame, row["version"], None, None, obj)
            action = Action(0, 0, frame, obj, "mask", None, None, None, encode_rle(after)[0],
                            time.time())
            editor = svc.prompts
            editor._compute_added(video_id, media, action)  # conditions the tracker
            version = editor._commit(video_id, [action], {(frame, obj): after}, "mask", 0)
        svc.changed(video_id, version, "prompt")
        return svc.frame_result(video_id, frame, version, action.id, None, obj)
