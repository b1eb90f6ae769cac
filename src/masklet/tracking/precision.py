"""Numeric precision of the video predictors: the one place where it is switched.

``"fp32"`` runs every step in float32 and gives the official model's outputs (the parity
tests' path). ``"bf16"`` runs the model under bfloat16 autocast on its device: the heavy
operations (every matmul and linear, the fused attention, the convolutions of the trunk,
neck, memory encoder and mask decoder) take bf16 inputs, while the steps whose rounding
would move mask edges stay in float32:

- layer norms compute their statistics in float32 (even on bf16 inputs), and the
  memory attention's residual stream stays float32 (the trunk's is bf16 after its
  first stage, as in the official model under autocast);
- attention keeps its scores and softmax sums in float32 inside the fused kernel;
- rotary angles and the complex rotation itself are float32 (`masklet.modeling.rope`);
- sine and random-Fourier position encodings are float32 (their angles reach tens to
  hundreds of radians, where bf16's steps are 0.06 to 2 rad);
- the mask decoder's last product, which makes the mask logits, runs in float32, and
  the logits are upsampled and thresholded in float32 (`SAM2Model._select_output`).

Memories are stored in bf16 either way. bf16 pays on GPUs and on CPUs that multiply bf16
natively (AVX-512 BF16 or AMX, see `cpu_bf16_features`); elsewhere it is slower than fp32.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import platform
import warnings

import torch

PRECISIONS = ("fp32", "bf16")


# CPU features with native bf16 matrix products: AVX-512 BF16 (vdpbf16ps; Intel Cooper
# Lake and later, AMD Zen 4 and later) and AMX tiles (Intel Sapphire Rapids and later).
BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")


def check_precision(precision: str, device: torch.device | None = None) -> str:
    """The precision name, or ValueError naming the valid ones.

    With ``device``, warns when bf16 is asked for on a CPU without native bf16 matrix
    products (neither AVX-512 BF16 nor AMX): there PyTorch emulates bf16 matmuls, far
    below the fp32 rate (on an AVX2-only EPYC, one thread: 0.3 vs 19 GFLOP/s for a
    1024 x 1024 product), so bf16 is slower than fp32, not faster. With either feature
    bf16 is the faster setting and no warning is given.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if (precision == "bf16" and device is not None and device.type == "cpu"
            and not cpu_bf16_features()):
        warnings.warn(
            "precision='bf16' on a CPU without native bf16 (neither avx512_bf16 nor AMX) "
            "is slower than 'fp32' (bf16 matrix products are emulated here); "
            "use precision='fp32'",
            RuntimeWarning, stacklevel=3,
        )
    return precision


def recommended_precision(device: torch.device | str) -> str:
    """"bf16" where it is the faster setting (a CUDA GPU with bf16 support, or a CPU with
    AVX-512 BF16 or AMX), else "fp32". bf16 masks differ slightly from fp32 ones."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_features() else "fp32"
    return "fp32"


def cpu_bf16_features() -> tuple[str, ...]:
    """The native bf16 matrix features of this CPU, a subset of `BF16_CPU_FEATURES`.

    Read from the kernel's CPU flags on Linux, and from PyTorch's own CPUID probes
    (which also work elsewhere and inside VMs that hide flags from /proc/cpuinfo); a
    feature counts when either source reports it.
    """
    flags = set(linux_cpu_flags())
    if _torch_probe("_is_avx512_bf16_supported"):
        flags.add("avx512_bf16")
    if _torch_probe("_is_amx_tile_supported"):  # every AMX CPU has the bf16 tile ops
        flags.add("amx_bf16")
    return tuple(f for f in BF16_CPU_FEATURES if f in flags)


def linux_cpu_flags() -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo; empty where there is no such file."""
    value = _cpuinfo_value("flags")
    return frozenset(value.split()) if value is not None else frozenset()


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's on Linux, else what the platform says."""
    return (_cpuinfo_value("model name") or platform.processor() or platform.machine()
            or "unknown CPU")


def _cpuinfo_value(key: str) -> str | None:
    """The first processor's ``key`` line of /proc/cpuinfo, stripped; None where there is
    no such line or file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return " ".join(value.split())
    except OSError:
        pass
    return None


def _torch_probe(name: str) -> bool:
    """torch.cpu's probe ``name`` (a private API: False when absent or failing)."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a probe that cannot tell means "no"
        return False


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
