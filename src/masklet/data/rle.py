"""COCO run-length encoded masks (the format of SA-1B and SA-V annotations), via pycocotools."""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
from pycocotools import mask as mask_utils


def _as_coco_rle(rle: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Normalise an RLE dict for pycocotools: compressed counts as bytes."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{where}: an RLE needs 'size' and 'counts', got {str(rle)[:80]}")
    height, width = rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, list):
        # Uncompressed RLE (a list of run lengths) must be compressed before decoding.
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [height, width], "counts": counts}


def rle_size(rle: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) recorded in an RLE dict; ValueError when it has none."""
    try:
        height, width = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not an RLE dict with a 'size' of two integers: {str(rle)[:80]}") from err
    return height, width


def decode_rle(rle: Mapping[str, Any] | None, size: tuple[int, int], *, where: str = "RLE") -> np.ndarray:
    """Decode one RLE to a [H, W] bool mask; ``None`` (no annotation) decodes to all False.

    Args:
        rle: {"size": [H, W], "counts": str | bytes | list[int]} or None.
        size: the expected (H, W); a different recorded size raises ValueError.
        where: text naming the annotation in error messages (e.g. the file path).
    """
    if rle is None:
        return np.zeros(size, dtype=bool)
    coco = _as_coco_rle(rle, where)
    if tuple(coco["size"]) != tuple(size):
        raise ValueError(f"{where}: RLE size {tuple(coco['size'])} does not match (H, W) {tuple(size)}")
    try:
        with warnings.catch_warnings():
            # pycocotools' compiled decoder trips numpy 2's __array__(copy=...) deprecation
            # check on every call; the decoded mask is unaffected.
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(coco).astype(bool)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot decode RLE: {err}") from err


def rle_area(rle: Mapping[str, Any] | None, *, where: str = "RLE") -> int:
    """Foreground pixel count of an RLE without decoding it (0 for None)."""
    if rle is None:
        return 0
    return int(mask_utils.area(_as_coco_rle(rle, where)))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a [H, W] bool mask as a JSON-ready RLE dict (``counts`` as str)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
