"""Greedy box non-maximum suppression in plain torch (a stand-in for torchvision.ops).

Semantics match ``torchvision.ops.batched_nms``:

* boxes are XYXY; IoU uses areas ``(x1 - x0) * (y1 - y0)`` (no +1) and is
  evaluated in the same order of float operations as torchvision's kernel;
* a box is suppressed by a higher-scoring kept box of the same category when
  their IoU is strictly greater than `iou_threshold`;
* boxes are visited by decreasing score with a *stable* sort, so among equal
  scores the lower index wins (torchvision's CPU kernel does the same), and the
  kept indices are returned in that visiting order.

Boxes of different categories never interact. torchvision gets this by offsetting
each category's boxes far apart, which perturbs IoUs by float rounding; here
categories are compared directly, so results equal torchvision's exactly when
all boxes share one category (the AMG's case) and up to that rounding otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["box_area", "box_iou", "nms", "batched_nms"]

# Rows of the suppression matrix built per step: bounds memory at _BLOCK x N.
_BLOCK = 2048


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of XYXY boxes [..., 4] -> [...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of XYXY boxes [N, 4] x [M, 4] -> [N, M] (NaN where both are empty)."""
    area1 = box_area(boxes1)[:, None]
    area2 = box_area(boxes2)[None, :]
    # Per-coordinate [N, 1] x [1, M] broadcasts: about twice as fast as [N, M, 2] slices.
    c1, c2 = boxes1.T[:, :, None], boxes2.T[:, None, :]
    w = (torch.minimum(c1[2], c2[2]) - torch.maximum(c1[0], c2[0])).clamp_(min=0)
    h = (torch.minimum(c1[3], c2[3]) - torch.maximum(c1[1], c2[1])).clamp_(min=0)
    inter = w.mul_(h)
    return inter / (area1 + area2 - inter)


def _float_threshold(iou_threshold: float, dtype: torch.dtype) -> float:
    """Largest `dtype` value <= `iou_threshold`.

    torchvision compares float IoUs with a double threshold; comparing against this
    value in `dtype` gives the same answer for every representable IoU.
    """
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    value = np_dtype(iou_threshold)
    if float(value) > iou_threshold:
        value = np.nextafter(value, np_dtype(-np.inf))
    return float(value)


def _greedy_keep(boxes: torch.Tensor, categories: torch.Tensor, iou_threshold: float) -> list[int]:
    """Greedy NMS over boxes already sorted by decreasing score; returns kept positions.

    The IoU test runs vectorised on the boxes' device one block of rows at a time;
    only the sequential accept/suppress walk runs on the host.
    """
    n = boxes.shape[0]
    threshold = _float_threshold(iou_threshold, boxes.dtype)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        # Only later boxes can be suppressed by boxes in this block.
        overlap = box_iou(boxes[start:stop], boxes[start:]) > threshold
        overlap &= categories[start:stop, None] == categories[None, start:]
        overlap = overlap.cpu().numpy()
        for row in range(stop - start):
            i = start + row
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed[start:] |= overlap[row]
    return keep


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS performed independently per category.

    Args:
        boxes: [N, 4] XYXY.
        scores: [N].
        idxs: [N] integer category of each box.
        iou_threshold: suppress when IoU > this.
    Returns:
        [K] int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.dtype != torch.float64:
        boxes = boxes.float()
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = _greedy_keep(boxes[order], idxs[order], iou_threshold)
    return order[torch.tensor(kept, dtype=torch.int64, device=order.device)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Single-category NMS: boxes [N, 4] XYXY, scores [N] -> kept indices [K] int64."""
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_threshold)
