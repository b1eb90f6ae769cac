"""Building blocks of the automatic mask generator (AMG).

Semantics follow SAM 2's ``sam2/utils/amg.py`` exactly (same outputs, dtypes
and orderings) so generated masks match the official generator; the RLE
helpers live in :mod:`masklet.amg.rle` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from masklet.amg.rle import area_from_rle, coco_encode_rle, mask_to_rle_pytorch, rle_to_mask

__all__ = [
    "MaskData",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]

MaskValue = torch.Tensor | np.ndarray | list | None
_SUPPORTED = (torch.Tensor, np.ndarray, list)


def _check_value(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, _SUPPORTED):
        raise TypeError(f"MaskData[{key!r}] must be a tensor, ndarray or list, got {type(value)}")


class MaskData:
    """Per-mask fields stored batch-first (dim 0 indexes masks), filtered and grown together.

    Values are tensors, numpy arrays, lists (e.g. of RLE dicts) or None.
    """

    def __init__(self, **fields: MaskValue) -> None:
        for key, value in fields.items():
            _check_value(key, value)
        self._fields: dict[str, MaskValue] = dict(fields)

    def __setitem__(self, key: str, value: MaskValue) -> None:
        _check_value(key, value)
        self._fields[key] = value

    def __getitem__(self, key: str) -> MaskValue:
        return self._fields[key]

    def __delitem__(self, key: str) -> None:
        del self._fields[key]

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def keys(self):
        return self._fields.keys()

    def items(self):
        return self._fields.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the masks selected by `keep` ([N] bool, or int indices) in every field."""
        for key, value in self._fields.items():
            self._fields[key] = _select(value, keep)

    def cat(self, other: MaskData) -> None:
        """Append `other`'s masks along dim 0; fields new to `self` are copied in."""
        for key, value in other.items():
            mine = self._fields.get(key)
            if mine is None:
                self._fields[key] = _copy(value)
            elif isinstance(value, torch.Tensor):
                self._fields[key] = torch.cat([mine, value], dim=0)
            elif isinstance(value, np.ndarray):
                self._fields[key] = np.concatenate([mine, value], axis=0)
            else:
                self._fields[key] = mine + list(value)

    def to_numpy(self) -> None:
        """Convert every tensor field to a float32 numpy array (as the reference does)."""
        for key, value in self._fields.items():
            if isinstance(value, torch.Tensor):
                self._fields[key] = value.float().detach().cpu().numpy()


def _select(value: MaskValue, keep: torch.Tensor) -> MaskValue:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[torch.as_tensor(keep, device=value.device)]
    if isinstance(value, np.ndarray):
        return value[keep.detach().cpu().numpy()]
    if keep.dtype == torch.bool:
        return [item for item, k in zip(value, keep.tolist()) if k]
    return [value[i] for i in keep.tolist()]


def _copy(value: MaskValue) -> MaskValue:
    # Copy so later in-place edits of either container cannot leak into the other;
    # list items (RLE dicts) are treated as immutable and shared.
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return None if value is None else list(value)


def batch_iterator(batch_size: int, *args: Sequence) -> Iterator[list]:
    """Yield ``[a[i:i+batch_size] for a in args]`` over equally long sequences."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs at least one sequence, all of the same length")
    for start in range(0, len(args[0]), batch_size):
        yield [a[start : start + batch_size] for a in args]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """Centres of an n x n grid of cells over [0, 1]^2.

    Returns:
        [n*n, 2] float64 (x, y), x varying fastest.
    """
    offset = 1 / (2 * n_per_side)
    coords = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(coords, coords)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One point grid per crop layer (layer 0 is the full image), each `scale_per_layer` x
    sparser."""
    return [
        build_point_grid(int(n_per_side / (scale_per_layer**layer)))
        for layer in range(n_layers + 1)
    ]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Overlapping crops: the whole image, then a 2^i x 2^i tiling for layer i = 1..n_layers.

    Args:
        im_size: (H, W).
    Returns:
        crop boxes as [x0, y0, x1, y1] ints, and the layer index of each.
    """
    im_h, im_w = im_size
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n_side = 2**layer
        overlap = int(overlap_ratio * min(im_h, im_w) * (2 / n_side))
        crop_w = math.ceil((overlap * (n_side - 1) + im_w) / n_side)
        crop_h = math.ceil((overlap * (n_side - 1) + im_h) / n_side)
        x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
        # x-major order, matching the reference's crop (and hence mask) order.
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift boxes [..., 4] (XYXY) from crop to image coordinates."""
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift points [..., 2] (XY) from crop to image coordinates."""
    return points + torch.tensor([crop_box[0], crop_box[1]], device=points.device)


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Zero-pad crop masks [..., h, w] to the full image [..., orig_h, orig_w]."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)
    return F.pad(masks, pad, value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """Whether each box [N, 4] (crop coordinates) touches a crop edge that is not an image edge.

    Returns:
        [N] bool.
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop, atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig, atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def box_xyxy_to_xywh(box_xyxy: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """XYXY -> XYWH along the last dim; works on tensors and numpy arrays, returns a copy."""
    box = box_xyxy.clone() if isinstance(box_xyxy, torch.Tensor) else box_xyxy.copy()
    box[..., 2:] = box_xyxy[..., 2:] - box_xyxy[..., :2]
    return box


def calculate_stability_score(
    masks: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold +/- offset``.

    The high-threshold mask is inside the low-threshold one, so the IoU is just
    the ratio of their areas (NaN when both are empty, as in the reference).

    Args:
        masks: [..., H, W] logits.
    Returns:
        [...] float32.
    """
    inner = (masks > (mask_threshold + threshold_offset)).sum(dim=(-2, -1))
    outer = (masks > (mask_threshold - threshold_offset)).sum(dim=(-2, -1))
    return inner / outer


def _first_last(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First/last True index along the last dim (n and -1 where none)."""
    n = occupied.shape[-1]
    idx = torch.arange(n, device=occupied.device)
    first = torch.where(occupied, idx, n).amin(dim=-1)
    last = torch.where(occupied, idx, -1).amax(dim=-1)
    return first, last


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive pixel indices) around masks; [0, 0, 0, 0] for empty ones.

    Args:
        masks: [..., H, W] bool.
    Returns:
        [..., 4] int64 (float zeros when `masks` has no elements, like the reference).
    """
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device)
    top, bottom = _first_last(masks.any(dim=-1))
    left, right = _first_last(masks.any(dim=-2))
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = bottom < 0
    return boxes * (~empty).unsqueeze(-1)


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``mode="islands"``) under `area_thresh`.

    Regions are 8-connected. Labels are numbered in raster order (as OpenCV does),
    so "keep the largest island" breaks ties the same way as the reference.

    Args:
        mask: [H, W] bool.
    Returns:
        the [H, W] bool mask, and whether anything changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    # Holes are the connected regions of the background, islands those of the mask.
    working = mask ^ fill_holes
    labels, n_labels = scipy.ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.reshape(-1), minlength=n_labels + 1)[1:]
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    # keep[label] says whether pixels with that label are foreground in the output.
    if fill_holes:
        keep = np.concatenate([[True], small])
    elif small.all():
        keep = np.zeros(n_labels + 1, dtype=bool)
        keep[int(np.argmax(sizes)) + 1] = True
    else:
        keep = np.concatenate([[False], ~small])
    return keep[labels], True
