"""Mask post-processing that the official code runs only on CUDA, here on any device.

The official release fills small holes and removes small isolated regions with a
CUDA connected-components kernel and silently skips both on CPU. We label
components with `scipy.ndimage.label` (8-connectivity, as the CUDA kernel) on the
CPU, which is fast for the 256x256 low-resolution logits these steps work on.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def component_areas(binary: torch.Tensor) -> torch.Tensor:
    """Area of the 8-connected component each foreground pixel belongs to.

    Args:
        binary: [N, 1, H, W] bool (or 0/1) masks.
    Returns:
        [N, 1, H, W] int64: the component's pixel count for foreground pixels, 0 elsewhere.
    """
    masks = binary.detach().to("cpu", torch.bool).numpy()
    out = np.zeros(masks.shape, dtype=np.int64)
    for i in range(masks.shape[0]):
        labels, count = ndimage.label(masks[i, 0], structure=_EIGHT_CONNECTED)
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0  # background keeps area 0
            out[i, 0] = sizes[labels]
    return torch.from_numpy(out).to(binary.device)


def fill_holes(
    logits: torch.Tensor, max_area: float, threshold: float = 0.0, fill_value: float | None = None
) -> torch.Tensor:
    """Turn background regions of at most ``max_area`` pixels into foreground.

    Args:
        logits: [N, 1, H, W] mask logits; background is ``logits <= threshold``.
        max_area: largest hole (in pixels at this resolution) to fill; <= 0 disables.
        fill_value: logit written into filled holes (default ``threshold + 10``, as the
            image predictor; the video predictor uses 0.1).
    """
    if max_area <= 0:
        return logits
    areas = component_areas(logits <= threshold)
    is_hole = (areas > 0) & (areas <= max_area)
    value = threshold + 10.0 if fill_value is None else fill_value
    return torch.where(is_hole, torch.as_tensor(value, dtype=logits.dtype), logits)


def remove_sprinkles(
    logits: torch.Tensor, max_area: float, threshold: float = 0.0, fill_value: float | None = None
) -> torch.Tensor:
    """Turn foreground regions of at most ``max_area`` pixels into background.

    Args:
        logits: [N, 1, H, W] mask logits; foreground is ``logits > threshold``.
        max_area: largest isolated region to remove; <= 0 disables.
        fill_value: logit written into removed regions (default ``threshold - 10``).
    """
    if max_area <= 0:
        return logits
    areas = component_areas(logits > threshold)
    is_sprinkle = (areas > 0) & (areas <= max_area)
    value = threshold - 10.0 if fill_value is None else fill_value
    return torch.where(is_sprinkle, torch.as_tensor(value, dtype=logits.dtype), logits)


def clean_masks(
    logits: torch.Tensor, max_hole_area: float, max_sprinkle_area: float, threshold: float = 0.0
) -> torch.Tensor:
    """Fill holes and remove sprinkles on [B, M, H, W] logits, as the image predictor does.

    Both kinds of region are found on the input masks (as the official code does), so a
    filled hole never makes a neighbouring small region count as large.
    """
    flat = logits.flatten(0, 1).unsqueeze(1)
    out = flat
    if max_hole_area > 0:
        areas = component_areas(flat <= threshold)
        out = torch.where((areas > 0) & (areas <= max_hole_area), threshold + 10.0, out)
    if max_sprinkle_area > 0:
        areas = component_areas(flat > threshold)
        out = torch.where((areas > 0) & (areas <= max_sprinkle_area), threshold - 10.0, out)
    return out.view_as(logits)
