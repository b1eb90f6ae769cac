"""Parity of the image encoder (Hiera trunk, FPN neck, sine position encodings) with SAM 2."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import require_data, require_reference

from masklet.modeling.hiera import Hiera, drop_path
from masklet.modeling.image_encoder import FpnNeck, ImageEncoder, ImageEncoderOutput
from masklet.modeling.position_encoding import PositionEmbeddingSine, sine_pe_1d

TOL = 1e-4

# Trunk hyperparameters of the official configs (sam2/configs/sam2.1/*.yaml).
TRUNKS = {
    "tiny": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "large": dict(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    return ((ours - ref).abs().max() / ref.abs().max().clamp(min=1)).item()


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norm scales around 1, so no zero-init hides a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def channel_list(embed_dim: int) -> list[int]:
    return [8 * embed_dim, 4 * embed_dim, 2 * embed_dim, embed_dim]


def build_reference(sam2, trunk_kwargs: dict) -> nn.Module:
    from sam2.modeling.backbones.hieradet import Hiera as RefHiera
    from sam2.modeling.backbones.image_encoder import FpnNeck as RefNeck
    from sam2.modeling.backbones.image_encoder import ImageEncoder as RefEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine as RefSine

    neck = RefNeck(
        position_encoding=RefSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000),
        d_model=256,
        backbone_channel_list=channel_list(trunk_kwargs["embed_dim"]),
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return RefEncoder(scalp=1, trunk=RefHiera(**trunk_kwargs), neck=neck).eval()


def build_ours(trunk_kwargs: dict) -> ImageEncoder:
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=256),
        d_model=256,
        backbone_channel_list=channel_list(trunk_kwargs["embed_dim"]),
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(scalp=1, trunk=Hiera(**trunk_kwargs), neck=neck).eval()


def matched_pair(size: str) -> tuple[nn.Module, ImageEncoder]:
    ref = build_reference(require_reference(), TRUNKS[size])
    randomize(ref)
    ours = build_ours(TRUNKS[size])
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def assert_outputs_match(out: ImageEncoderOutput, ref_out: dict) -> float:
    """Compare every level; returns the largest relative error."""
    assert len(out.backbone_fpn) == len(ref_out["backbone_fpn"]) == 3
    assert len(out.vision_pos_enc) == len(ref_out["vision_pos_enc"]) == 3
    pairs = [(out.vision_features, ref_out["vision_features"])]
    pairs += list(zip(out.backbone_fpn, ref_out["backbone_fpn"]))
    pairs += list(zip(out.vision_pos_enc, ref_out["vision_pos_enc"]))
    errors = [rel_err(a, b) for a, b in pairs]
    assert max(errors) <= TOL, errors
    return max(errors)


def truck_image(side: int) -> torch.Tensor:
    """truck.jpg resized to side x side, ImageNet-normalised: [1, 3, side, side]."""
    path = require_data("images", "truck.jpg")
    image = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((pixels - mean) / std)[None]


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_encoder_matches_reference_random_input(size):
    ref, ours = matched_pair(size)
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(x)
        assert_outputs_match(out, ref(x))
    assert out.vision_features.shape == (2, 256, 16, 16)
    assert [f.shape[-1] for f in out.backbone_fpn] == [64, 32, 16]


@pytest.mark.parametrize("size, side", [("tiny", 1024), ("small", 512)])
def test_encoder_matches_reference_real_image(size, side, capsys):
    ref, ours = matched_pair(size)
    x = truck_image(side)
    with torch.no_grad():
        start = time.perf_counter()
        ref_out = ref(x)
        ref_time = time.perf_counter() - start
        start = time.perf_counter()
        out = ours(x)
        our_time = time.perf_counter() - start
    err = assert_outputs_match(out, ref_out)
    assert out.vision_features.shape == (1, 256, side // 16, side // 16)
    with capsys.disabled():
        print(
            f"\n[{size} @ {side}px, 1 image, CPU] masklet {our_time:.2f}s vs reference "
            f"{ref_time:.2f}s; max rel err {err:.2e}"
        )


@pytest.mark.parametrize(
    "variant",
    [
        dict(q_pool=2, input_hw=(128, 128)),
        dict(return_interm_layers=False, input_hw=(128, 128)),
        dict(global_att_blocks=(2, 4), input_hw=(256, 192)),
    ],
)
def test_trunk_variants_match_reference(variant):
    """Smaller, non-official configurations: partial pooling, last stage only, non-square."""
    require_reference()
    from sam2.modeling.backbones.hieradet import Hiera as RefHiera

    variant = dict(variant)
    input_hw = variant.pop("input_hw")
    kwargs = dict(embed_dim=32, num_heads=1, stages=(1, 2, 3, 1), global_att_blocks=(4,))
    kwargs.update(variant)
    ref = RefHiera(**kwargs).eval()
    randomize(ref, seed=3)
    ours = Hiera(**kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.channel_list == ref.channel_list
    x = torch.randn(1, 3, *input_hw, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        outs, ref_outs = ours(x), ref(x)
    assert len(outs) == len(ref_outs)
    for a, b in zip(outs, ref_outs):
        assert rel_err(a, b) <= TOL


def test_trunk_drop_path_matches_reference_in_training():
    """With the same seed, stochastic depth draws the same masks as the reference."""
    require_reference()
    from sam2.modeling.backbones.hieradet import Hiera as RefHiera

    kwargs = dict(embed_dim=32, num_heads=1, stages=(1, 2, 3, 1), drop_path_rate=0.5)
    ref = RefHiera(**kwargs).train()
    randomize(ref, seed=5)
    ours = Hiera(**kwargs).train()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(7)
    ref_out = ref(x)[-1]
    torch.manual_seed(7)
    out = ours(x)[-1]
    assert rel_err(out, ref_out) <= TOL
    # Stochastic: another draw differs, and eval mode is deterministic.
    assert not torch.allclose(ours(x)[-1], out)
    ours.eval()
    assert torch.equal(ours(x)[-1], ours(x)[-1])


def test_drop_path_drops_whole_samples():
    x = torch.ones(4000, 3, 5)
    torch.manual_seed(0)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] != 0
    # Each sample is either dropped entirely or kept and rescaled by 1 / (1 - p).
    assert torch.all(per_sample[~kept] == 0)
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert drop_path(x, 0.25, training=False) is x
    assert torch.equal(drop_path(x, 1.0, training=True), torch.zeros_like(x))


@pytest.mark.parametrize("size", ["base_plus", "large"])
def test_large_configs_have_checkpoint_keys(size, monkeypatch):
    """Key names and shapes of the bigger models (built on the meta device: no memory)."""
    require_reference()
    # The reference reads its drop-path rates with .item(), impossible on meta tensors.
    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        ref = build_reference(require_reference(), TRUNKS[size])
        ours = build_ours(TRUNKS[size])
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
    our_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert ours.trunk.channel_list == ref.trunk.channel_list


@pytest.mark.slow
def test_base_plus_matches_reference_small_input():
    ref, ours = matched_pair("base_plus")
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_outputs_match(ours(x), ref(x))


@pytest.mark.parametrize(
    "fuse_type, top_down, mode", [("avg", None, "bilinear"), ("sum", [1, 2], "nearest")]
)
def test_neck_options_match_reference(fuse_type, top_down, mode):
    require_reference()
    from sam2.modeling.backbones.image_encoder import FpnNeck as RefNeck
    from sam2.modeling.position_encoding import PositionEmbeddingSine as RefSine

    channels = [64, 32, 16]
    kwargs = dict(
        d_model=32,
        backbone_channel_list=channels,
        fuse_type=fuse_type,
        fpn_top_down_levels=top_down,
        fpn_interp_model=mode,
    )
    ref = RefNeck(position_encoding=RefSine(num_pos_feats=32), **kwargs)
    randomize(ref, seed=8)
    ours = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=32), **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(9)
    # Highest resolution first, as the trunk returns them.
    xs = [
        torch.randn(2, c, 32 // 2**i, 24 // 2**i, generator=gen)
        for i, c in enumerate(channels[::-1])
    ]
    (feats, pos), (ref_feats, ref_pos) = ours(xs), ref(xs)
    for a, b in zip(feats + pos, ref_feats + ref_pos):
        assert rel_err(a, b) <= TOL


@pytest.mark.parametrize(
    "kwargs, hw",
    [
        (dict(num_pos_feats=256), (64, 64)),
        (dict(num_pos_feats=256), (7, 13)),
        (dict(num_pos_feats=64, temperature=20, scale=1.5), (5, 9)),
        (dict(num_pos_feats=128, normalize=False), (12, 4)),
    ],
)
def test_position_embedding_sine_matches_reference(kwargs, hw):
    require_reference()
    from sam2.modeling.position_encoding import PositionEmbeddingSine as RefSine

    ours, ref = PositionEmbeddingSine(**kwargs), RefSine(**kwargs)
    x = torch.zeros(3, 8, *hw)
    expected = ref(x)
    got = ours(x)
    assert got.shape == (3, kwargs["num_pos_feats"], *hw)
    assert rel_err(got, expected) <= 1e-6
    # Cached per shape: a second call gives the same values, another shape its own.
    assert torch.equal(ours(x), got)
    other = torch.zeros(1, 8, hw[0] + 1, hw[1])
    assert rel_err(ours(other), ref(other)) <= 1e-6
    assert ours(x.half()).dtype == torch.float16


@pytest.mark.parametrize("dim, temperature", [(256, 10000), (64, 10000), (16, 100.0)])
def test_sine_pe_1d_matches_reference(dim, temperature):
    require_reference()
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    positions = torch.tensor([[0.0, 0.25, 1.0], [3.0, 7.5, 15.0]])
    got = sine_pe_1d(positions, dim, temperature)
    assert got.shape == (2, 3, dim)
    assert rel_err(got, get_1d_sine_pe(positions, dim, temperature)) <= 1e-6
    with pytest.raises(ValueError):
        sine_pe_1d(positions, dim + 1)
