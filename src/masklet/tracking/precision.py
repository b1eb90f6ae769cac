"""Numeric precision of the video predictors: the one place where it is switched.

``"fp32"`` runs every step in float32 and gives the official model's outputs (the parity
tests' path). ``"bf16"`` runs the model under bfloat16 autocast on its device: matmuls,
convolutions and attention in bf16 (fast on CPUs with AMX and on recent GPUs),
normalisation, softmax statistics, rotary encoding and the mask logits in float32, as the
official predictor does under autocast. Memories are stored in bf16 either way.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings

import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device | None = None) -> str:
    """The precision name, or ValueError naming the valid ones.

    With ``device``, warns when bf16 is asked for on a CPU without AMX tiles: there
    bf16 matmuls run at about half the fp32 rate (measured on an AVX-512-BF16 Xeon:
    80 vs 162 GFLOP/s on one core), so bf16 is slower than fp32, not faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "bf16" and device is not None and device.type == "cpu" and not _cpu_has_amx():
        warnings.warn(
            "precision='bf16' on a CPU without AMX is usually slower than 'fp32' "
            "(bf16 matrix products have no fast path here); use precision='fp32'",
            RuntimeWarning, stacklevel=3,
        )
    return precision


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (the fast bf16 path); False if torch cannot tell."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def inference_context(precision: str, device: torch.device) -> contextlib.ExitStack:
    """Inference mode plus, for bf16, autocast on ``device``: wrap one step of work in it.

    Entered per step (never across a ``yield``), so the caller's own code between frames
    never runs under the predictor's autocast.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if precision == "bf16":
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    return stack


def in_precision(method):
    """Decorate a predictor method to run in inference mode at the predictor's precision.

    The instance provides ``_context()`` (an `inference_context`). For generator methods
    the context is active only while the generator computes, not while it is suspended
    at a ``yield``.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            steps = method(self, *args, **kwargs)
            try:
                while True:
                    with self._context():
                        try:
                            item = next(steps)
                        except StopIteration:
                            return
                    yield item
            finally:
                steps.close()

        return generator

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._context():
            return method(self, *args, **kwargs)

    return wrapper
