"""Helpers shared by the benchmark scripts: the official `sam2` package as a baseline.

The official image predictor imports three torchvision transforms; torchvision is
not a masklet dependency (and does not load everywhere), so `use_plain_transforms`
registers small torch versions of them before `sam2` is imported. Nothing in the
masklet package imports this module.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# CPU flags every benchmark prints: fp32 matrix speed (AVX2 / AVX-512) and native bf16.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_line() -> str:
    """"CPU: <model>; <n> logical CPUs; flags: avx2+ avx512f- ..." for the benchmark header
    (the CPU changes between machines, and bf16 speed depends on these flags)."""
    from masklet.tracking.precision import cpu_model, linux_cpu_flags

    flags = linux_cpu_flags()
    shown = " ".join(f"{f}{'+' if f in flags else '-'}" for f in SHOWN_FLAGS) if flags else "n/a"
    return f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; flags: {shown}"


# Short size names used in the official config file names.
_SIZE_CODES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


class _ToTensor:
    """[H, W, 3] uint8 RGB (numpy or PIL) -> [3, H, W] float32 in [0, 1]."""

    def __call__(self, picture) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(picture, dtype=np.uint8))
        return pixels.permute(2, 0, 1).float().div(255)


class _Resize(nn.Module):
    """Antialiased bilinear resize of a [3, H, W] tensor to ``size`` (H, W)."""

    def __init__(self, size) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image.unsqueeze(0), size=self.size, mode="bilinear",
                             align_corners=False, antialias=True).squeeze(0)


class _Normalize(nn.Module):
    """Per-channel (x - mean) / std on a [3, H, W] tensor."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32)[:, None, None])
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32)[:, None, None])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


def use_plain_transforms() -> None:
    """Make ``import torchvision.transforms`` give the three classes above (idempotent)."""
    if getattr(sys.modules.get("torchvision"), "_benchmark_stand_in", False):
        return
    package = types.ModuleType("torchvision")
    package._benchmark_stand_in = True
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor, transforms.Resize, transforms.Normalize = _ToTensor, _Resize, _Normalize
    package.transforms = transforms
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms


def official_config_file(preset: str) -> str:
    """The official hydra config for a preset name such as ``sam2.1_hiera_tiny``."""
    generation, _, size = preset.partition("_hiera_")
    if generation not in ("sam2", "sam2.1") or size not in _SIZE_CODES:
        raise KeyError(f"{preset!r} is not an official preset")
    return f"configs/{generation}/{generation}_hiera_{_SIZE_CODES[size]}.yaml"


def build_official(preset: str, *, device: str = "cpu", seed: int = 0, scale: float = 0.02):
    """The official model for ``preset`` with seeded random weights, in eval mode.

    Every parameter gets Gaussian noise so no layer keeps a trivial (zero / one) init.
    """
    use_plain_transforms()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam2.build_sam import build_sam2

        torch.manual_seed(seed)
        model = build_sam2(official_config_file(preset), None, device="cpu")
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * scale)
    return model.to(device).eval()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of one call, synchronised on ``device``."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max(1, max |ref|), the project's parity measure."""
    a = torch.as_tensor(np.asarray(ours), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(ref), dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {tuple(a.shape)} != reference {tuple(b.shape)}")
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))
