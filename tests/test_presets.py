"""Every registered preset builds, runs, round-trips its state dict and has the official keys.

Parametrized over `masklet.config.PRESETS` as it is at collection time, so presets
registered later are covered too. The forward runs at a reduced input size (256 px)
where the same code paths run; presets over 60M parameters (base_plus, large) are slow.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from masklet import PRESETS, build_model
from masklet.checkpoint import expected_shapes
from masklet.modeling.sam2 import SAM2Model, SamHeadOutput

SIZE = 256  # input resolution of the forward checks (feature map 16x16, low-res masks 64x64)
HEAVY_PARAMS = 60e6  # base_plus and large: a build + forward + reload takes >15 s on 2 busy cores


@functools.cache
def _num_params(name: str) -> int:
    """Learnable parameters (not buffers), counted on the meta device."""
    with torch.device("meta"):
        model = SAM2Model(PRESETS[name])
    return sum(p.numel() for p in model.parameters())


def _params(names):
    """Heavy presets go to the slow suite."""
    return [pytest.param(n, marks=pytest.mark.slow) if _num_params(n) > HEAVY_PARAMS else n
            for n in names]


NAMES = sorted(PRESETS)

# Parameter counts (millions, truncated to one decimal) in the official README, both generations.
OFFICIAL_MILLIONS = {"tiny": 38.9, "small": 46.0, "base_plus": 80.8, "large": 224.4}

# Official presets whose reference builds fast enough for the default suite.
REFERENCE_CHEAP = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2_hiera_tiny", "sam2_hiera_small")


def _click() -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.tensor([[[0.4 * SIZE, 0.6 * SIZE]]])
    return coords, torch.ones(1, 1, dtype=torch.int32)


def _run(model: SAM2Model, image: torch.Tensor) -> SamHeadOutput:
    feats = model.add_no_mem_embed(model.forward_image(image))
    return model.forward_sam_heads(
        feats.image_embed, feats.high_res_feats, points=_click(), multimask_output=True
    )


def _image() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


class _Built:
    """One model per preset, built with a fixed seed, and its outputs on a fixed image."""

    def __init__(self, name: str):
        torch.manual_seed(0)
        self.config = PRESETS[name].with_image_size(SIZE)
        self.model = build_model(self.config, random_weights=True)
        with torch.inference_mode():
            self.out = _run(self.model, _image())


_CACHE: dict[str, _Built] = {}


def _built(name: str) -> _Built:
    # Building dominates the cost; keep only the current preset to bound memory.
    if name not in _CACHE:
        _CACHE.clear()
        _CACHE[name] = _Built(name)
    return _CACHE[name]


@pytest.mark.parametrize("name", NAMES)
def test_official_parameter_counts(name):
    size = next((s for s in OFFICIAL_MILLIONS if name.endswith(f"_hiera_{s}")), None)
    if size is None:
        pytest.skip(f"{name} is not an official preset")
    assert math.floor(_num_params(name) / 1e5) / 10 == OFFICIAL_MILLIONS[size]


@pytest.mark.parametrize("name", _params(NAMES))
def test_builds_and_runs_at_reduced_size(name):
    b = _built(name)
    assert not b.model.training and b.model.image_size == SIZE
    assert b.model.config.name == name
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in b.model.parameters())
    side = SIZE // 4
    o = b.out
    assert o.low_res_multimasks.shape == (1, 3, side, side)
    assert o.high_res_multimasks.shape == (1, 3, SIZE, SIZE)
    assert o.ious.shape == (1, 3)
    assert o.low_res_masks.shape == (1, 1, side, side)
    assert o.high_res_masks.shape == (1, 1, SIZE, SIZE)
    assert o.obj_ptr.shape == (1, b.config.d_model)
    assert o.object_score_logits.shape == (1, 1)
    for field in ("low_res_multimasks", "ious", "obj_ptr", "object_score_logits"):
        assert torch.isfinite(getattr(o, field)).all(), field
    # The best-IoU candidate is the one returned as the single mask.
    best = int(o.ious.argmax())
    assert torch.equal(o.low_res_masks[0, 0], o.low_res_multimasks[0, best])


@pytest.mark.parametrize("name", _params(NAMES))
def test_state_dict_round_trip(name):
    b = _built(name)
    state = b.model.state_dict()
    torch.manual_seed(1)  # a different random init, so an ignored load would show
    fresh = SAM2Model(b.config).eval()
    differs = any(not torch.equal(v, state[k]) for k, v in fresh.state_dict().items()
                  if v.is_floating_point())
    assert differs, "two random initialisations are identical: the check below could not fail"
    fresh.load_state_dict(state, strict=True)
    with torch.inference_mode():
        out = _run(fresh, _image())
    for field in ("low_res_multimasks", "ious", "obj_ptr", "object_score_logits"):
        assert torch.equal(getattr(out, field), getattr(b.out, field)), field


def _reference_params():
    from reference import OFFICIAL_CONFIG_FILES

    return [
        n if n in REFERENCE_CHEAP else pytest.param(n, marks=pytest.mark.slow)
        for n in NAMES if n in OFFICIAL_CONFIG_FILES
    ]


@pytest.mark.parametrize("name", _reference_params())
def test_state_dict_keys_and_shapes_are_official(name):
    from reference import build_reference

    ref = {k: tuple(v.shape) for k, v in build_reference(name).state_dict().items()}
    ours = expected_shapes(PRESETS[name])
    assert sorted(set(ours) - set(ref)) == [] and sorted(set(ref) - set(ours)) == []
    assert ours == ref


def test_backward_reaches_trunk_and_decoder():
    torch.manual_seed(0)
    model = build_model(PRESETS["sam2.1_hiera_tiny"].with_image_size(SIZE), random_weights=True,
                        eval_mode=False)
    assert model.training
    out = _run(model, _image())
    loss = out.low_res_multimasks.sigmoid().mean() + out.ious.sum() + out.obj_ptr.pow(2).mean()
    loss.backward()
    trunk = dict(model.image_encoder.trunk.named_parameters())
    missing = [k for k, p in trunk.items() if p.grad is None]
    assert missing == [], f"trunk parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trunk.values())
    assert trunk["patch_embed.proj.weight"].grad.abs().sum() > 0
    decoder = model.sam_mask_decoder
    for module in (decoder.transformer, decoder.output_upscaling, decoder.iou_prediction_head,
                   decoder.conv_s0, decoder.conv_s1):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
