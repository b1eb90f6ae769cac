"""Checked decoding of COCO run-length encoded annotations (SA-1B and SA-V).

The encoding itself lives in :mod:`masklet.amg.rle`; this adds what a dataset reader
needs: validation against the expected frame size, absent annotations (``None``) and
error messages that name the offending file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from masklet.amg.rle import decode_coco_rle


def rle_size(rle: Any) -> tuple[int, int]:
    """(height, width) recorded in an RLE dict; ValueError when it has none."""
    try:
        height, width = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not an RLE dict with a 'size' of two integers: {str(rle)[:80]}") from err
    return height, width


def _check(rle: Any, size: tuple[int, int] | None, where: str) -> None:
    if not isinstance(rle, Mapping) or "counts" not in rle:
        raise ValueError(f"{where}: an RLE needs 'size' and 'counts', got {str(rle)[:80]}")
    recorded = rle_size(rle)
    if size is not None and recorded != tuple(size):
        raise ValueError(f"{where}: RLE size {recorded} does not match (H, W) {tuple(size)}")


def decode_rle(
    rle: Mapping[str, Any] | None, size: tuple[int, int], *, where: str = "RLE"
) -> np.ndarray:
    """Decode one RLE to a [H, W] bool mask; ``None`` (no annotation) decodes to all False.

    Args:
        rle: {"size": [H, W], "counts": str | bytes | list[int]} or None.
        size: the expected (H, W); a different recorded size raises ValueError.
        where: text naming the annotation in error messages (e.g. the file path).
    """
    if rle is None:
        return np.zeros(size, dtype=bool)
    _check(rle, size, where)
    try:
        with warnings.catch_warnings():
            # pycocotools' compiled decoder trips numpy 2's __array__(copy=...) deprecation
            # check on every call; the decoded mask is unaffected.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_coco_rle(dict(rle))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot decode RLE: {err}") from err


def rle_area(rle: Mapping[str, Any] | None, *, where: str = "RLE") -> int:
    """Foreground pixel count of a compressed RLE without decoding it (0 for None)."""
    if rle is None:
        return 0
    _check(rle, None, where)
    counts = rle["counts"]
    if isinstance(counts, list):
        return int(sum(counts[1::2]))  # uncompressed: odd runs are foreground
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return int(mask_utils.area({"size": list(rle_size(rle)), "counts": counts}))
