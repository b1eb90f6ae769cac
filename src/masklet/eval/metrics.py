"""Per-frame J (region IoU) and F (boundary F-measure) with DAVIS 2017 toolkit semantics.

Conventions followed from the davis2017-evaluation toolkit:
- J of two empty masks is 1.
- Boundaries are the seg2bmap boundary pixels: a pixel is on the boundary when it differs
  from its right, bottom or bottom-right neighbour; on the last row only the right
  neighbour counts, on the last column only the bottom one, and the bottom-right pixel
  never is.
- Boundary pixels match when they lie within a disk of radius
  ``ceil(bound_th * image_diagonal)`` (or ``bound_th`` pixels when ``bound_th >= 1``).
- F with no predicted and no true boundary is 1; with exactly one of them empty it is 0.
- Sequence statistics: mean, recall (fraction of frames > 0.5) and decay (mean of the
  first quarter of frames minus mean of the last quarter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFAULT_BOUND_TH = 0.008
RECALL_THRESHOLD = 0.5
DECAY_BINS = 4


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: intersection over union of two [H, W] bool masks (1.0 when both are empty)."""
    _check_pair(gt, pred)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """seg2bmap boundary pixels of a [H, W] bool mask: [H, W] bool.

    Each pixel is compared with its right, bottom and bottom-right neighbours; the
    boundary therefore sits half a pixel towards the origin from the true contour.
    """
    mask = mask.astype(bool, copy=False)
    right = np.zeros_like(mask)
    below = np.zeros_like(mask)
    diagonal = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    # The image border is not an object edge: the last row and column only look
    # along the border, and the corner has no neighbour at all.
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_tolerance(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Match radius in pixels: ``bound_th`` itself when >= 1, else a fraction of the diagonal."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def _foreground_crop(gt: np.ndarray, pred: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of both masks grown by one pixel (clipped), or None when both are empty.

    Every boundary pixel of either mask lies inside this box (a boundary pixel is at most
    one pixel up/left of the foreground), and boundary_map of the crop equals the
    full-image map restricted to it, so all the matching can be done on the crop.
    """
    rows = np.flatnonzero((gt | pred).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((gt | pred).any(axis=0))
    height, width = gt.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, height)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, width)),
    )


def _matched_count(points: np.ndarray, targets: np.ndarray, radius: int) -> int:
    """How many True pixels of ``points`` lie within ``radius`` of a True pixel of ``targets``.

    Equivalent to ``points & dilate(targets, disk(radius))``: squared pixel distances are
    integers, so comparing the exact Euclidean distance with the integer radius selects
    exactly the offsets with dx^2 + dy^2 <= radius^2 (the disk footprint).
    """
    distance = ndimage.distance_transform_edt(~targets)
    return int(np.count_nonzero(points & (distance <= radius)))


def boundary_f_measure(
    gt: np.ndarray, pred: np.ndarray, bound_th: float = DEFAULT_BOUND_TH
) -> float:
    """F: boundary F-measure between two [H, W] bool masks."""
    _check_pair(gt, pred)
    crop = _foreground_crop(gt, pred)
    if crop is None:
        return 1.0
    gt_boundary = boundary_map(gt[crop])
    pred_boundary = boundary_map(pred[crop])
    n_gt = np.count_nonzero(gt_boundary)
    n_pred = np.count_nonzero(pred_boundary)
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    radius = boundary_tolerance(*gt.shape, bound_th=bound_th)
    precision = _matched_count(pred_boundary, gt_boundary, radius) / n_pred
    recall = _matched_count(gt_boundary, pred_boundary, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D and of equal shape, got {gt.shape} and {pred.shape}")
    if gt.dtype != bool or pred.dtype != bool:
        raise TypeError(f"masks must be bool arrays, got {gt.dtype} and {pred.dtype}")


@dataclass(frozen=True)
class Statistics:
    """Summary of one score over the frames of an object: mean, recall and decay."""

    mean: float
    recall: float
    decay: float


def sequence_statistics(values: np.ndarray) -> Statistics:
    """Mean, recall and decay of per-frame scores [T] (T >= 1).

    Decay splits the frames into four nearly equal, overlapping-at-the-edges bins exactly
    as the toolkit does (bin edges ``round(linspace(1, T, 5)) - 1``, inclusive) and
    returns mean(first bin) - mean(last bin).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"need a non-empty 1-D array of per-frame scores, got shape {values.shape}"
        )
    # The toolkit adds 1e-10 so that exact .5 edges round up; it then casts to uint8,
    # which wraps past 255 frames; plain ints keep long videos correct.
    edges = (np.round(np.linspace(1, values.size, DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[DECAY_BINS - 1] : edges[DECAY_BINS] + 1]
    return Statistics(
        mean=float(values.mean()),
        recall=float(np.mean(values > RECALL_THRESHOLD)),
        decay=float(first.mean() - last.mean()),
    )
