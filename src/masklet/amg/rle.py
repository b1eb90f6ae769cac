"""Run-length encodings of binary masks, in the layouts pycocotools understands.

Two flavours are used:

* *uncompressed* RLE: ``{"size": [H, W], "counts": [int, ...]}`` where counts
  are alternating run lengths of 0s and 1s over the mask in column-major
  (Fortran) order, always starting with a run of 0s (possibly of length 0);
* *COCO* (compressed) RLE: the same runs packed into pycocotools' ASCII string,
  stored as ``str`` so the dict can go straight into JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "mask_to_rle_pytorch",
    "rle_to_mask",
    "area_from_rle",
    "coco_encode_rle",
    "encode_coco_rle",
    "decode_coco_rle",
]


def mask_to_rle_pytorch(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Uncompressed RLE of each mask in a batch, computed on the masks' device.

    Args:
        masks: [B, H, W] bool (any dtype: nonzero is foreground).

    Returns:
        B dicts ``{"size": [H, W], "counts": list[int]}``.
    """
    b, h, w = masks.shape
    # Column-major order, as pycocotools expects.
    flat = masks.bool().transpose(1, 2).reshape(b, h * w)
    rows, cols = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
    # One device->host transfer; the per-mask splitting is cheap numpy work.
    per_mask = torch.bincount(rows, minlength=b).cpu().numpy()
    change_at = (cols + 1).cpu().numpy()
    starts_with_one = flat[:, 0].cpu().numpy()
    out = []
    offset = 0
    for i in range(b):
        changes = change_at[offset : offset + per_mask[i]]
        offset += per_mask[i]
        runs = np.diff(changes, prepend=0, append=h * w).tolist()
        # Counts must begin with a run of 0s, even an empty one.
        counts = [0] + runs if starts_with_one[i] else runs
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed RLE.

    Returns:
        [H, W] bool array (a Fortran-ordered view, which pycocotools encodes without a copy).
    """
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    """Foreground pixel count of an uncompressed RLE (the odd-indexed runs)."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Compress an uncompressed RLE to COCO RLE with a JSON-ready ``str`` counts."""
    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def encode_coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of one binary mask.

    Args:
        mask: [H, W], bool or numeric (nonzero is foreground).
    """
    fortran = np.asfortranarray(np.asarray(mask) != 0, dtype=np.uint8)
    rle = mask_utils.encode(fortran)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def decode_coco_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (``str``/``bytes`` counts, or uncompressed) to [H, W] bool."""
    counts = rle["counts"]
    if isinstance(counts, str):
        rle = {"size": rle["size"], "counts": counts.encode("utf-8")}
    elif isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)
