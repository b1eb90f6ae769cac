"""Checking user prompts (clicks, boxes) and mapping them to model pixels, in numpy.

Mirrors masklet.predictor.prompts so the same prompt gives the same graph input and
the same one-line error text.
"""

from __future__ import annotations

import numpy as np

from masklet_runtime.bank import PointPrompt
from masklet_runtime.postprocess import resize_bilinear_aa

# Point labels: -1 padding, 0 negative click, 1 positive click, 2 / 3 box corners.
VALID_LABELS = (-1, 0, 1, 2, 3)
BOX_LABELS = (2, 3)


class PromptError(ValueError):
    """A prompt that cannot be applied (bad shape, label or coordinates)."""


def _finite(value, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{name} contains NaN or infinite values")
    return arr


def check_points(coords, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate clicks: coords [N, 2] or [B, N, 2] (x, y), labels [N] or [B, N].

    Returns coords as float64 and labels as int64.
    """
    if (coords is None) != (labels is None):
        raise PromptError("point_coords and point_labels must be given together")
    pts = _finite(coords, "point_coords")
    lab = np.asarray(labels)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2:
        raise PromptError(f"point_coords must have shape [N, 2] or [B, N, 2], got {pts.shape}")
    if lab.shape != pts.shape[:-1]:
        raise PromptError(
            f"point_labels shape {lab.shape} does not match point_coords shape {pts.shape}"
        )
    bad = ~np.isin(lab, VALID_LABELS)
    if bad.any():
        raise PromptError(
            f"unknown point label(s) {sorted(set(lab[bad].tolist()))}; "
            "use 1 (positive), 0 (negative), 2/3 (box corners) or -1 (padding)"
        )
    return pts, lab.astype(np.int64)


def check_box(box) -> np.ndarray:
    """Validate boxes: [4] or [B, 4] as (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1."""
    arr = _finite(box, "box")
    if arr.shape[-1:] != (4,) or arr.ndim > 2:
        raise PromptError(f"box must have shape [4] or [B, 4] (x0, y0, x1, y1), got {arr.shape}")
    flat = arr.reshape(-1, 4)
    if np.any(flat[:, 2] < flat[:, 0]) or np.any(flat[:, 3] < flat[:, 1]):
        raise PromptError(f"box corners must satisfy x0 <= x1 and y0 <= y1, got {flat.tolist()}")
    return arr


def check_in_frame(xy: np.ndarray, hw: tuple[int, int], normalized: bool, what: str) -> None:
    """Raise when an (x, y) lies outside the image (pixels, or [0, 1] units when normalized)."""
    h, w = (1.0, 1.0) if normalized else (float(hw[0]), float(hw[1]))
    xs, ys = xy[..., 0], xy[..., 1]
    outside = (xs < 0) | (xs > w) | (ys < 0) | (ys > h)
    if outside.any():
        first = xy[outside][0].tolist()
        unit = "normalised [0, 1] units" if normalized else f"a {hw[1]}x{hw[0]} (WxH) image"
        raise PromptError(f"{what} {first} lies outside {unit}")


def to_model_coords(xy, orig_hw: tuple[int, int], image_size: int, normalize: bool) -> np.ndarray:
    """(x, y) [..., 2] from image pixels (normalize=True) or [0, 1] units to model pixels.

    float32 throughout, dividing then scaling, so the numbers round as masklet's do.
    """
    xy = np.array(xy, dtype=np.float32)
    if normalize:
        h, w = orig_hw
        xy[..., 0] = xy[..., 0] / np.float32(w)
        xy[..., 1] = xy[..., 1] / np.float32(h)
    return xy * np.float32(image_size)


def video_point_prompt(points, labels, box, hw: tuple[int, int],
                       image_size: int) -> PointPrompt:
    """One object's clicks ([N, 2] source pixels, labels [N]) and / or box [4] on a video
    frame of size ``hw`` -> model-pixel points (box corners first, labels 2, 3)."""
    if points is None and box is None:
        raise PromptError("give points (with labels) or a box")
    coords = np.zeros((0, 2))
    labs = np.zeros((0,), dtype=np.int64)
    if points is not None or labels is not None:
        coords, labs = check_points(points, labels)
        coords, labs = coords.reshape(-1, 2), labs.reshape(-1)
    if box is not None:
        corners = check_box(box).reshape(-1, 2)
        if corners.shape[0] != 2:
            raise PromptError("a video prompt takes one box [4]")
        coords = np.concatenate([corners, coords])
        labs = np.concatenate([[2, 3], labs]).astype(np.int64)
    check_in_frame(coords, hw, False, "point")
    xy = to_model_coords(coords, hw, image_size, normalize=True)
    return PointPrompt(xy[None].astype(np.float32), labs[None].astype(np.int64))


def video_mask_prompt(mask, image_size: int) -> np.ndarray:
    """A binary mask [H, W] (any size) -> [1, 1, S, S] float32 0/1 (antialiased resize,
    then re-binarised at 0.5, as masklet does)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise PromptError(f"mask must be a non-empty 2-D [H, W] array, got shape "
                          f"{tuple(m.shape)}")
    m = (m != 0).astype(np.float32)[None, None]
    if m.shape[-2:] != (image_size, image_size):
        m = (resize_bilinear_aa(m, (image_size, image_size)) >= 0.5).astype(np.float32)
    return m
