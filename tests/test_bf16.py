"""bf16 precision: the heavy operations really run in bf16, and the CPU check tells the truth.

The dtype test counts the FLOPs of every matmul, fused attention and convolution that a
bf16 tracking step runs (with the dtypes their kernels receive, after autocast) and
requires nearly all of them in bf16, so a path that drops back to float32 (an explicit
``.float()``, a fast path that leaves autocast) fails it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from heavy_ops import HeavyOpLedger
from torch import nn

from conftest import make_objects_present

from masklet import VideoPredictor, build_model, get_config
from masklet.tracking import precision
from masklet.tracking.precision import check_precision, cpu_bf16_features, recommended_precision

# Share of the heavy FLOPs (of each kind) that must run in bf16 under precision="bf16".
# What stays float32 by design is about 0.01 % (the mask decoder's last product and the
# prompt encoder's random-Fourier projection; see masklet.tracking.precision).
MIN_BF16_SHARE = 0.99
KINDS = ("matmul", "attention", "conv")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ CPU capability


def _fake_cpu(monkeypatch, flags: set[str], avx512_bf16_probe=False, amx_probe=False):
    """Pretend the CPU has ``flags`` in /proc/cpuinfo and these torch CPUID probe answers."""
    monkeypatch.setattr(precision, "linux_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16_probe,
                        raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx_probe, raising=False)


@pytest.mark.parametrize("flags,probes,expected", [
    ({"avx2", "fma"}, {}, ()),                                   # AVX2 only (this EPYC)
    ({"avx2", "avx512f", "avx512bw"}, {}, ()),                   # AVX-512 without BF16
    ({"avx2", "avx512f", "avx512_bf16"}, {}, ("avx512_bf16",)),  # Zen 4 / Cooper Lake
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, {}, ("avx512_bf16", "amx_bf16")),  # Xeon SPR
    (set(), {"avx512_bf16_probe": True}, ("avx512_bf16",)),      # flags hidden, CPUID knows
    (set(), {"amx_probe": True}, ("amx_bf16",)),
])
def test_cpu_bf16_features_and_warning(monkeypatch, flags, probes, expected):
    _fake_cpu(monkeypatch, flags, **probes)
    assert cpu_bf16_features() == expected
    native = bool(expected)
    assert recommended_precision("cpu") == ("bf16" if native else "fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_precision("bf16", torch.device("cpu"))
        check_precision("fp32", torch.device("cpu"))
    slow = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(slow) == (0 if native else 1)


def test_predictor_warns_only_without_native_bf16(monkeypatch):
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(64), random_weights=True)
    for flags, warns in (({"avx2"}, True), ({"avx2", "avx512_bf16"}, False)):
        _fake_cpu(monkeypatch, flags)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            VideoPredictor(model, precision="bf16", progress=False)
        assert any("without native bf16" in str(w.message) for w in caught) == warns


def test_failing_probe_means_no_feature(monkeypatch):
    def broken():
        raise RuntimeError("cpuinfo failed")

    monkeypatch.setattr(precision, "linux_cpu_flags", lambda: frozenset())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert cpu_bf16_features() == ()


def test_linux_cpu_flags_reads_the_first_processor():
    try:
        with open("/proc/cpuinfo") as info:
            line = next(x for x in info if x.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert precision.linux_cpu_flags() == frozenset(line.split(":", 1)[1].split())


# ------------------------------------------------------------------ heavy ops in bf16


def _frames(num: int = 4, size: int = 96) -> list[np.ndarray]:
    """A bright disc moving right over a dark background."""
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(num):
        frame = np.full((size, size, 3), 30, np.uint8)
        frame[(yy - 48) ** 2 + (xx - 30 - 5 * t) ** 2 < 15**2] = (230, 200, 40)
        frames.append(frame)
    return frames


def _tracked_ledger(model, precision_name: str, objects: int = 2, frames: int = 4):
    """The `HeavyOpLedger` of tracking ``objects`` objects through ``frames`` `_frames`
    (the prompts are not counted)."""
    predictor = VideoPredictor(model, precision=precision_name, progress=False)
    state = predictor.init_state(_frames(frames))
    for obj_id in range(1, objects + 1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=[[30, 40 + 8 * obj_id]],
                                        labels=[1])
    ledger = HeavyOpLedger()
    with ledger:
        for _ in predictor.propagate_in_video(state):
            pass
    return ledger


def _assert_heavy_ops_bf16(ledger: HeavyOpLedger) -> None:
    for kind in KINDS:
        assert ledger.total(kind) > 0, f"no {kind} was recorded"
        share = ledger.share(torch.bfloat16, kind)
        assert share >= MIN_BF16_SHARE, f"only {share:.1%} of the {kind} FLOPs ran in bf16"


def _model(preset: str, size: int, device: str = "cpu"):
    torch.manual_seed(0)
    model = build_model(get_config(preset).with_image_size(size), random_weights=True,
                        device=device)
    make_objects_present(model)  # else no memory work
    return model


@pytest.fixture(scope="module")
def tiny():
    return _model("sam2.1_hiera_tiny", 128)


def test_bf16_tracking_runs_heavy_ops_in_bf16(tiny):
    """Trunk, neck, memory attention, memory encoder and decoder: all their FLOPs in bf16."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 on a CPU without it
        _assert_heavy_ops_bf16(_tracked_ledger(tiny, "bf16"))
    # The ledger tells the precisions apart: fp32 tracking runs none of them in bf16.
    fp32 = _tracked_ledger(tiny, "fp32")
    assert fp32.total() > 0 and fp32.share(torch.bfloat16) == 0.0


def test_heavy_op_check_catches_a_float32_path(tiny, monkeypatch):
    """A linear that leaves autocast and computes in float32 makes the check fail."""

    def float32_linear(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float(), self.bias)

    monkeypatch.setattr(nn.Linear, "forward", float32_linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ledger = _tracked_ledger(tiny, "bf16", objects=1)
    with pytest.raises(AssertionError, match="matmul FLOPs ran in bf16"):
        _assert_heavy_ops_bf16(ledger)


def test_bf16_tracking_runs_heavy_ops_in_bf16_edgetam():
    """The same for EdgeTAM (RepViT trunk, perceiver memory), at its smallest size."""
    from masklet.config import EDGETAM_PRESET

    model = _model(EDGETAM_PRESET, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _assert_heavy_ops_bf16(_tracked_ledger(model, "bf16", objects=1, frames=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_tracking_runs_heavy_ops_in_bf16_on_gpu():
    _assert_heavy_ops_bf16(_tracked_ledger(_model("sam2.1_hiera_tiny", 256, "cuda"), "bf16"))
