"""A ledger of the heavy operations a computation runs: their dtypes and FLOPs.

`HeavyOpLedger` is a TorchDispatchMode, so it sees every aten op after autocast has
cast its inputs: what it records is the dtype the kernel really receives. Heavy ops are
matrix products (mm, addmm, bmm, baddbmm, oneDNN fused linears), convolutions and fused
attention; everything else (norms, softmax, elementwise) is not counted. Used by the
bf16 tests to check that the bf16 path keeps the FLOPs in bf16.
"""

from __future__ import annotations

import math
import traceback
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def _mm_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 * (rows of a) * (inner) * (cols of b), batch dims included in a."""
    return 2 * _numel(a.shape[:-1]) * a.shape[-1] * b.shape[-1]


def _conv_flops(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> int:
    """2 * MACs: each output (input, for a transposed conv) pixel of each output channel
    sums over in_channels / groups * kernel taps."""
    taps = _numel(w.shape[1:])  # in/groups * kernel for a conv; out/groups * kernel if transposed
    pixels = _numel(x.shape[2:]) if transposed else _numel(out.shape[2:])
    channels = w.shape[0]
    return 2 * x.shape[0] * pixels * channels * taps


def _sdpa_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """q k^T and weights @ v: 2 * B * heads * Lq * Lk * (E + Ev)."""
    batch = _numel(q.shape[:-2])
    return 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """torch.matmul of a [..., m, k] (or [k]) by b [..., k, n] (or [k]), batch broadcast."""
    if a.dim() == 1 or b.dim() == 1:
        return 2 * max(a.numel(), b.numel())
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return 2 * _numel(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]


def heavy_flops(func, args, out) -> tuple[str, int] | None:
    """(kind, FLOPs) of a heavy aten op, None for any other op.

    In inference mode the mode sees composite ops (linear, matmul, conv2d) before they
    decompose, elsewhere their parts (addmm, bmm, convolution): both are counted.
    """
    packet, name = func.overloadpacket, str(func.overloadpacket)
    if packet in (aten.mm, aten.bmm, aten.matmul):
        return "matmul", _matmul_flops(args[0], args[1])
    if packet in (aten.addmm, aten.baddbmm):
        return "matmul", _mm_flops(args[1], args[2])
    if packet is aten.linear or "_linear_pointwise" in name:  # weight: [out, in]
        return "matmul", 2 * _numel(args[0].shape[:-1]) * args[1].shape[1] * args[1].shape[0]
    if packet in (aten.convolution, aten._convolution):
        return "conv", _conv_flops(args[0], args[1], out, bool(args[6]))
    if packet in (aten.conv1d, aten.conv2d, aten.conv3d):
        return "conv", _conv_flops(args[0], args[1], out, False)
    if packet in (aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d):
        return "conv", _conv_flops(args[0], args[1], out, True)
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention", _sdpa_flops(args[0], args[1], args[2])
    return None


def _input_dtype(func, args):
    """The dtype of the two multiplied operands, or "mixed" when they differ."""
    a, b = (args[1], args[2]) if func.overloadpacket in (aten.addmm, aten.baddbmm) else args[:2]
    return a.dtype if a.dtype == b.dtype else "mixed"


@dataclass
class HeavyOpLedger(TorchDispatchMode):
    """Record each heavy op's kind, input dtype and FLOPs while active.

    ``where``: also record the innermost masklet source line of each op (slow; for
    profiling which code runs in which dtype).
    """

    where: bool = False
    flops: dict = field(default_factory=lambda: defaultdict(int))  # (kind, dtype) -> FLOPs
    sites: dict = field(default_factory=lambda: defaultdict(int))  # (site, kind, dtype) -> FLOPs

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        heavy = heavy_flops(func, args, out)
        if heavy is not None:
            kind, flops = heavy
            dtype = _input_dtype(func, args)
            self.flops[(kind, dtype)] += flops
            if self.where:
                self.sites[(_site(), kind, str(func.overloadpacket), dtype)] += flops
        return out

    def share(self, dtype: torch.dtype, kind: str | None = None) -> float:
        """Fraction of the recorded FLOPs (of one kind, or all) that ran in ``dtype``."""
        picked = {k: v for k, v in self.flops.items() if kind is None or k[0] == kind}
        total = sum(picked.values())
        return sum(v for k, v in picked.items() if k[1] == dtype) / total if total else 0.0

    def total(self, kind: str | None = None) -> int:
        return sum(v for k, v in self.flops.items() if kind is None or k[0] == kind)


def _site() -> str:
    """file:line (function) of the innermost frame inside the masklet package."""
    for frame in reversed(traceback.extract_stack()):
        if "/masklet/" in frame.filename and "/tests/" not in frame.filename:
            return f"{frame.filename.split('/masklet/')[-1]}:{frame.lineno} ({frame.name})"
    return "?"
