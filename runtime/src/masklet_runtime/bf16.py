"""bfloat16 rounding in numpy, which has no bfloat16 type.

masklet (like the official predictor) stores each memory in bfloat16. The runtime keeps
the same numbers: float32 values are rounded to bfloat16 precision with integer bit
operations, exactly as torch's ``tensor.to(torch.bfloat16)`` rounds (round to nearest,
ties to even; infinities stay infinite, overflow rounds to infinity; NaN stays NaN), and
kept as the upper 16 bits (uint16) to halve the memory bank.
"""

from __future__ import annotations

import numpy as np

# The quiet NaN torch's scalar conversion writes (sign and payload are not kept).
_NAN_BITS = np.uint16(0x7FC0)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 [...] -> uint16 [...]: the bfloat16 nearest to each value (ties to even)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit, then truncating, rounds to nearest with ties
    # going to the even neighbour; a carry into the exponent is the correct result (it
    # also turns the largest finite values into infinity, as torch does).
    lowest_kept = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + (np.uint32(0x7FFF) + lowest_kept)) >> np.uint32(16)
    out = rounded.astype(np.uint16)
    # NaN would otherwise be able to carry into the sign bit or round to infinity.
    out[np.isnan(x)] = _NAN_BITS
    return out


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 [...] bfloat16 bit patterns -> float32 [...] (exact)."""
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return wide.view(np.float32)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 [...] -> float32 [...] holding the bfloat16-rounded values."""
    return from_bf16_bits(to_bf16_bits(x))
