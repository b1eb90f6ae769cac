"""Validation and conversion of user prompts (clicks, boxes, masks) into model inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from masklet.tracking.state import PointPrompt

# Official point labels: -1 padding, 0 negative click, 1 positive click,
# 2 / 3 top-left / bottom-right box corners.
VALID_LABELS = (-1, 0, 1, 2, 3)
BOX_LABELS = (2, 3)


class PromptError(ValueError):
    """A prompt that cannot be applied (bad shape, label or coordinates)."""


def _as_float_array(value, name: str) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                     dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{name} contains NaN or infinite values")
    return arr


def check_points(coords, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate clicks: coords [N, 2] or [B, N, 2] (x, y) and labels [N] or [B, N]."""
    if (coords is None) != (labels is None):
        raise PromptError("point_coords and point_labels must be given together")
    pts = _as_float_array(coords, "point_coords")
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
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
    arr = _as_float_array(box, "box")
    if arr.shape[-1:] != (4,) or arr.ndim > 2:
        raise PromptError(f"box must have shape [4] or [B, 4] (x0, y0, x1, y1), got {arr.shape}")
    flat = arr.reshape(-1, 4)
    if np.any(flat[:, 2] < flat[:, 0]) or np.any(flat[:, 3] < flat[:, 1]):
        raise PromptError(f"box corners must satisfy x0 <= x1 and y0 <= y1, got {flat.tolist()}")
    return arr


def check_in_frame(xy: np.ndarray, hw: tuple[int, int], normalized: bool, what: str) -> None:
    """Raise when an (x, y) coordinate lies outside the image (pixels or [0, 1] units)."""
    h, w = (1.0, 1.0) if normalized else (float(hw[0]), float(hw[1]))
    xs, ys = xy[..., 0], xy[..., 1]
    outside = (xs < 0) | (xs > w) | (ys < 0) | (ys > h)
    if outside.any():
        first = xy[outside][0].tolist()
        unit = "normalised [0, 1] units" if normalized else f"a {hw[1]}x{hw[0]} (WxH) image"
        raise PromptError(f"{what} {first} lies outside {unit}")


def to_model_coords(
    xy: torch.Tensor, orig_hw: tuple[int, int], image_size: int, normalize: bool
) -> torch.Tensor:
    """Map (x, y) from image pixels (normalize=True) or [0, 1] units to model input pixels."""
    if normalize:
        h, w = orig_hw
        xy = xy.clone()
        xy[..., 0] = xy[..., 0] / w
        xy[..., 1] = xy[..., 1] / h
    return xy * image_size


def merge_box_and_points(
    box_xy: torch.Tensor | None, points: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Express boxes as two labelled corner points placed before the clicks, as SAM 2 does.

    Args:
        box_xy: [B, 2, 2] box corners in model pixels, or None.
        points: coords [B, N, 2] and labels [B, N], or None.
    """
    if box_xy is None:
        return points
    labels = torch.tensor([BOX_LABELS], dtype=torch.int32, device=box_xy.device)
    labels = labels.expand(box_xy.shape[0], 2)
    if points is None:
        return box_xy, labels
    coords, point_labels = points
    return torch.cat([box_xy, coords], dim=1), torch.cat([labels, point_labels.int()], dim=1)


def point_prompt(
    points,
    labels,
    box,
    *,
    frame_hw: tuple[int, int],
    image_size: int,
    device: torch.device,
    normalize: bool = True,
) -> PointPrompt:
    """Clicks ([N, 2] (x, y), labels [N]) and/or a box [4] of one video object -> model clicks.

    Coordinates are source pixels (``normalize``) or [0, 1] units. The box becomes the
    first two points (labels 2 and 3), as in the official predictor. Shared by the
    offline and streaming video predictors so the same prompt gives the same input.
    """
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
        labs = np.concatenate([[2, 3], labs])
    check_in_frame(coords, frame_hw, not normalize, "point")
    height, width = frame_hw
    xy = torch.as_tensor(coords, dtype=torch.float32)[None]
    if normalize:
        # Normalise then scale (not one combined factor) to round like the official code.
        xy = xy / torch.tensor([width, height])
    xy = xy * image_size
    lab = torch.as_tensor(labs, dtype=torch.int32)[None]
    return PointPrompt(xy.to(device), lab.to(device))


def mask_prompt(mask, *, image_size: int, device: torch.device) -> torch.Tensor:
    """A binary mask [H, W] (bool or 0/1, any size) -> [1, 1, S, S] float 0/1 model input."""
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if m.ndim != 2 or m.numel() == 0:
        raise PromptError(f"mask must be a non-empty 2-D [H, W] array, got shape {tuple(m.shape)}")
    m = m.bool()[None, None].float().to(device)
    if tuple(m.shape[-2:]) != (image_size, image_size):
        m = F.interpolate(m, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m
