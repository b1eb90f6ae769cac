"""Mask resizing and clean-up in numpy, with torch's and masklet's exact rules.

* `resize_bilinear`: ``F.interpolate(x, size, mode="bilinear", align_corners=False)``.
* `resize_bilinear_aa`: the same with ``antialias=True`` (a separable triangle filter
  widened by the scale factor), used to bring mask prompts to the model's size.
* `fill_holes`: masklet.postprocess.fill_holes: background regions (8-connected) of at
  most ``max_area`` pixels become foreground. Components are labelled here from runs of
  background pixels (two rows' runs touch when their column ranges overlap or meet at a
  corner), merged with a vectorised union-find: no scipy or OpenCV.
* `non_overlapping`: masklet.tracking.step.non_overlapping.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_F32 = np.float32


# ------------------------------------------------------------------ resizing
def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Source indices (i0, i1) and weights (l0, l1) per output index, [out] each, as torch's
    bilinear kernel computes them in float32 (half-pixel centres, clamped at the start)."""
    scale = _F32(in_size) / _F32(out_size)
    # torch evaluates scale * (i + 0.5) - 0.5 as one fused multiply-add (one rounding);
    # in float64 the product is exact, so rounding the result once to float32 matches it.
    src = (np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5).astype(_F32)
    src = np.maximum(src, _F32(0.0))
    i0 = src.astype(np.int64)  # truncation == floor: src >= 0
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = np.clip(src - i0.astype(_F32), _F32(0.0), _F32(1.0))
    return i0, i1, _F32(1.0) - l1, l1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (align_corners=False): [..., h, w] float32 -> [..., H, W] float32."""
    x = np.asarray(x, dtype=_F32)
    h, w = x.shape[-2:]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return x.copy()
    c0, c1, cw0, cw1 = _linear_taps(w, out_w)
    # Rows first along the width: each output value is then (top row's interpolation) *
    # lh0 + (bottom row's) * lh1, the order torch evaluates it in.
    rows = x[..., c0] * cw0 + x[..., c1] * cw1  # [..., h, W]
    r0, r1, rw0, rw1 = _linear_taps(h, out_h)
    return rows[..., r0, :] * rw0[:, None] + rows[..., r1, :] * rw1[:, None]


@lru_cache(maxsize=8)  # a video's mask prompts share one pair of sizes
def _aa_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bilinear taps: indices [out, K] and float32 weights [out, K] (zero
    weight on padding taps), computed with torch's mix of float32 and float64 steps.
    Cached: callers must not modify them."""
    scale = np.float32(in_size) / np.float32(out_size)
    support = np.float32(1.0 * float(scale)) if scale >= 1.0 else np.float32(1.0)
    invscale = np.float32(1.0 / float(scale)) if scale >= 1.0 else np.float32(1.0)
    width = int(np.ceil(float(support))) * 2 + 1  # torch's max taps per output
    idx = np.zeros((out_size, width), dtype=np.int64)
    wts = np.zeros((out_size, width), dtype=_F32)
    for i in range(out_size):
        center = np.float32(float(scale) * (i + 0.5))
        xmin = max(int(float(center) - float(support) + 0.5), 0)
        xsize = min(int(float(center) + float(support) + 0.5), in_size) - xmin
        j = np.arange(xsize)
        # (j + xmin - center) is float32 arithmetic, then + 0.5 and * invscale in float64.
        dist = ((j + xmin).astype(_F32) - center).astype(np.float64) + 0.5
        arg = np.abs((dist * float(invscale)).astype(_F32))
        w = np.where(arg < 1.0, _F32(1.0) - arg, _F32(0.0)).astype(_F32)
        total = _F32(0.0)
        for v in w:  # sequential float32 sum, as torch accumulates it
            total = _F32(total + v)
        if total != 0.0:
            w = (w / total).astype(_F32)
        idx[i, :xsize] = j + xmin
        wts[i, :xsize] = w
        idx[i, xsize:] = xmin
    return idx, wts


def _aa_along_last(x: np.ndarray, out_size: int) -> np.ndarray:
    idx, wts = _aa_taps(x.shape[-1], out_size)
    out = x[..., idx[:, 0]] * wts[:, 0]
    for k in range(1, idx.shape[1]):  # torch sums the taps in order
        out = out + x[..., idx[:, k]] * wts[:, k]
    return out


def resize_bilinear_aa(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize: [..., h, w] float32 -> [..., H, W] float32.

    Width first, then height (torch's order); a dimension that keeps its size is skipped.
    """
    x = np.asarray(x, dtype=_F32)
    out_h, out_w = size
    if x.shape[-1] != out_w:
        x = _aa_along_last(x, out_w)
    if x.shape[-2] != out_h:
        x = np.swapaxes(_aa_along_last(np.swapaxes(x, -1, -2), out_h), -1, -2)
    return np.ascontiguousarray(x, dtype=_F32)


# --------------------------------------------------------- connected components
def _runs(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in a [H, W] mask: row, start, end (exclusive), row-major."""
    h, w = binary.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = binary
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def _run_links(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs on consecutive rows that touch under 8-connectivity.

    Run b on row r + 1 touches run a on row r when b.start <= a.end and b.end >= a.start
    (ends exclusive: sharing a column, or meeting at a corner). A row's runs are sorted
    and disjoint, so those touching a form one contiguous range, found by binary search
    on row-major keys.
    """
    stride = width + 2
    start_keys = rows * stride + starts
    end_keys = rows * stride + ends
    below = (rows + 1) * stride
    first = np.searchsorted(end_keys, below + starts, side="left")
    last = np.searchsorted(start_keys, below + ends, side="right")
    counts = np.maximum(last - first, 0)
    a = np.repeat(np.arange(rows.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    b = np.repeat(first, counts) + offsets
    return a, b


def _union_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component root (its smallest member) of each of n nodes linked by edges (a, b)."""
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        lo, hi = np.minimum(ra, rb)[differ], np.maximum(ra, rb)[differ]
        # Hook each larger root under the smallest root it touches (parents only
        # decrease, so no cycle), then compress every path to its root.
        np.minimum.at(parent, hi, lo)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def small_component_mask(binary: np.ndarray, max_area: float) -> np.ndarray:
    """[H, W] bool: pixels of 8-connected True components of at most ``max_area`` pixels."""
    h, w = binary.shape
    rows, starts, ends = _runs(binary)
    out = np.zeros((h, w), dtype=bool)
    if rows.size == 0:
        return out
    a, b = _run_links(rows, starts, ends, w)
    roots = _union_roots(rows.size, a, b)
    areas = np.bincount(roots, weights=ends - starts, minlength=rows.size)
    small = areas[roots] <= max_area
    # Paint the chosen runs: +1 at each start, -1 at each end, summed along the row.
    marks = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(marks, (rows[small], starts[small]), 1)
    np.add.at(marks, (rows[small], ends[small]), -1)
    return np.cumsum(marks, axis=1)[:, :w] > 0


def fill_holes(logits: np.ndarray, max_area: float, threshold: float = 0.0,
               fill_value: float | None = None) -> np.ndarray:
    """Background regions (``logits <= threshold``) of at most ``max_area`` pixels get
    ``fill_value`` (default threshold + 10). logits: [N, 1, H, W] float32 -> same."""
    if max_area <= 0:
        return logits
    value = _F32(threshold + 10.0 if fill_value is None else fill_value)
    out = np.array(logits, dtype=_F32, copy=True)
    for i in range(out.shape[0]):
        holes = small_component_mask(out[i, 0] <= threshold, max_area)
        out[i, 0][holes] = value
    return out


def non_overlapping(masks: np.ndarray) -> np.ndarray:
    """Keep each pixel only for its highest-scoring object; the others are pushed to at
    most -10. masks: [B, 1, H, W] logits of one frame's objects -> same."""
    if masks.shape[0] <= 1:
        return masks
    winner = np.argmax(masks, axis=0)[None]
    ids = np.arange(masks.shape[0])[:, None, None, None]
    return np.where(winner == ids, masks, np.minimum(masks, _F32(-10.0))).astype(_F32)
