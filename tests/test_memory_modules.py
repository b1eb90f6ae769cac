"""Parity of RoPE, memory attention and the memory encoder with the official modules.

The modules are built with the hyperparameters of the official configs (identical for all
model sizes), given random weights, and loaded into masklet with strict=True.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import require_reference
from reference import rel_err

from masklet.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from masklet.modeling.memory_encoder import (
    CXBlock,
    Fuser,
    MaskDownSampler,
    MemoryEncoder,
    MemoryEncoderOutput,
)
from masklet.modeling.position_encoding import PositionEmbeddingSine
from masklet.modeling.rope import RoPEAttention, apply_axial_rope, rope_tables

TOL = 1e-4
D_MODEL, MEM_DIM = 256, 64



def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random weights; norms scale around 1 and layer scales (gamma) are far from 1e-6."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * noise)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.08 * noise)


def load_into(ours: nn.Module, ref: nn.Module) -> None:
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)


# --------------------------------------------------------------------------- RoPE


def ref_rope_module():
    require_reference()
    from sam2.modeling import position_encoding

    return position_encoding


@pytest.mark.parametrize("height,width,dim", [(64, 64, 256), (32, 32, 256), (24, 40, 32)])
def test_tables_match_reference_cis(height, width, dim):
    ref_pe = ref_rope_module()
    cis = ref_pe.compute_axial_cis(dim=dim, end_x=width, end_y=height, theta=10000.0)
    cos, sin = rope_tables(height, width, dim, 10000.0, torch.device("cpu"), torch.float32)
    assert cos.shape == (height * width, dim // 2)
    # torch.polar's cos/sin and the vectorised ones may differ in the last bit.
    assert (cos - cis.real).abs().max() <= 1e-6 and (sin - cis.imag).abs().max() <= 1e-6


@pytest.mark.parametrize("side", [64, 32])
@pytest.mark.parametrize("num_frames,num_exclude", [(1, 0), (2, 0), (2, 4), (1, 4), (0, 4)])
def test_apply_rope_matches_reference(side, num_frames, num_exclude):
    ref_pe = ref_rope_module()
    heads, dim, n = 2, 32, side * side
    gen = torch.Generator().manual_seed(side + num_frames)
    q = torch.randn(2, heads, n, dim, generator=gen)
    k = torch.randn(2, heads, num_frames * n + num_exclude, dim, generator=gen)
    repeat = num_frames != 1
    cos, sin = rope_tables(side, side, dim, 10000.0, q.device, q.dtype)
    q_out, k_out = apply_axial_rope(q, k, cos, sin, repeat_k=repeat, num_k_exclude=num_exclude)

    cis = ref_pe.compute_axial_cis(dim=dim, end_x=side, end_y=side)
    k_ref = k.clone()
    num_rope = k.shape[2] - num_exclude
    q_ref, k_ref[:, :, :num_rope] = ref_pe.apply_rotary_enc(
        q, k[:, :, :num_rope], freqs_cis=cis, repeat_freqs_k=repeat
    )
    assert rel_err(q_out, q_ref) <= 1e-6
    assert rel_err(k_out, k_ref) <= 1e-6
    assert torch.equal(k_out[:, :, num_rope:], k[:, :, num_rope:])
    assert not torch.allclose(q_out, q)  # the rotation is not a no-op


def test_apply_rope_rejects_mismatched_keys():
    cos, sin = rope_tables(4, 4, 8, 10000.0, torch.device("cpu"), torch.float32)
    q = torch.randn(1, 1, 16, 8)
    with pytest.raises(ValueError):
        apply_axial_rope(q, torch.randn(1, 1, 20, 8), cos, sin, repeat_k=True)
    with pytest.raises(ValueError):
        apply_axial_rope(q, torch.randn(1, 1, 32, 8), cos, sin, repeat_k=False)


def make_rope_attention_pair(cls_ref, *, cross: bool, dropout: float = 0.1):
    kwargs = dict(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1, dropout=dropout)
    if cross:
        kwargs.update(kv_in_dim=MEM_DIM, rope_k_repeat=True)
    ref = cls_ref(rope_theta=10000.0, feat_sizes=[64, 64], **kwargs)
    ours = RoPEAttention(rope_theta=10000.0, feat_sizes=(64, 64), **kwargs)
    randomize(ref)
    load_into(ours, ref)
    return ref.eval(), ours.eval()


@pytest.mark.parametrize("side", [32, 64])
def test_rope_attention_cross_matches_reference(side):
    require_reference()
    from sam2.modeling.sam.transformer import RoPEAttention as RefRoPEAttention

    ref, ours = make_rope_attention_pair(RefRoPEAttention, cross=True)
    n = side * side
    q = torch.randn(1, n, D_MODEL)
    k = torch.randn(1, 2 * n + 4, MEM_DIM)
    v = torch.randn(1, 2 * n + 4, MEM_DIM)
    with torch.no_grad():
        expected = ref(q, k, v, num_k_exclude_rope=4)
        got = ours(q, k, v, num_k_exclude_rope=4)
        assert rel_err(got, expected) <= TOL
        # Explicit grid size gives the same result as the inferred square grid.
        assert torch.equal(ours(q, k, v, num_k_exclude_rope=4, grid_hw=(side, side)), got)


def test_rope_attention_grid_size():
    attn = RoPEAttention(embedding_dim=32, num_heads=1, feat_sizes=(48, 16))
    assert attn.grid_size(48 * 16) == (16, 48)  # feat_sizes is (width, height)
    assert attn.grid_size(32 * 32) == (32, 32)
    assert attn.grid_size(12, grid_hw=(3, 4)) == (3, 4)
    with pytest.raises(ValueError):
        attn.grid_size(12)
    with pytest.raises(ValueError):
        attn.grid_size(12, grid_hw=(4, 4))


def test_rope_tables_are_cached_across_calls():
    attn = RoPEAttention(embedding_dim=64, num_heads=2).eval()
    x = torch.randn(1, 16 * 16, 64)
    rope_tables.cache_clear()
    with torch.no_grad():
        attn(x, x, x)
        attn(x, x, x)
    info = rope_tables.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    first = rope_tables(16, 16, 32, 10000.0, x.device, x.dtype)
    assert first is rope_tables(16, 16, 32, 10000.0, x.device, x.dtype)
    # A different dtype is a separate entry.
    rope_tables(16, 16, 32, 10000.0, x.device, torch.bfloat16)
    assert rope_tables.cache_info().misses == 2


def test_rope_table_from_inference_mode_is_usable_with_autograd():
    rope_tables.cache_clear()
    attn = RoPEAttention(embedding_dim=32, num_heads=1)
    x = torch.randn(1, 64, 32)
    with torch.inference_mode():
        attn(x, x, x)
    attn(x, x, x).sum().backward()  # reuses the cached table
    assert attn.q_proj.weight.grad is not None


def test_rope_attention_runs_in_bf16():
    attn = RoPEAttention(embedding_dim=64, num_heads=2, kv_in_dim=32, rope_k_repeat=True)
    randomize(attn)
    q, kv = torch.randn(2, 256, 64), torch.randn(2, 2 * 256 + 3, 32)
    with torch.no_grad():
        expected = attn(q, kv, kv, num_k_exclude_rope=3)
        got = attn.to(torch.bfloat16)(q.bfloat16(), kv.bfloat16(), kv.bfloat16(), 3)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, expected) <= 5e-2


# ----------------------------------------------------------------- memory attention


def build_memory_attention_pair(num_layers: int, dropout: float = 0.1):
    """Reference and masklet MemoryAttention with the official config, shared random weights."""
    require_reference()
    from sam2.modeling import memory_attention as ref_ma
    from sam2.modeling.sam.transformer import RoPEAttention as RefRoPEAttention

    def layer_kwargs(attn_cls, feat_sizes):
        common = dict(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1, dropout=dropout)
        return dict(
            activation="relu",
            d_model=D_MODEL,
            dim_feedforward=2048,
            dropout=dropout,
            pos_enc_at_attn=False,
            pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False,
            self_attention=attn_cls(rope_theta=1e4, feat_sizes=feat_sizes, **common),
            cross_attention=attn_cls(
                rope_theta=1e4,
                feat_sizes=feat_sizes,
                rope_k_repeat=True,
                kv_in_dim=MEM_DIM,
                **common,
            ),
        )

    ref = ref_ma.MemoryAttention(
        d_model=D_MODEL,
        pos_enc_at_input=True,
        layer=ref_ma.MemoryAttentionLayer(**layer_kwargs(RefRoPEAttention, [64, 64])),
        num_layers=num_layers,
    )
    ours = MemoryAttention(
        d_model=D_MODEL,
        pos_enc_at_input=True,
        layer=MemoryAttentionLayer(**layer_kwargs(RoPEAttention, (64, 64))),
        num_layers=num_layers,
    )
    randomize(ref, seed=num_layers)
    load_into(ours, ref)
    return ref.eval(), ours.eval()


def memory_inputs(side: int, batch: int = 2, frames: int = 2, ptrs: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, m = side * side, frames * side * side + ptrs
    return dict(
        curr=torch.randn(n, batch, D_MODEL, generator=gen),
        curr_pos=torch.randn(n, batch, D_MODEL, generator=gen),
        memory=torch.randn(m, batch, MEM_DIM, generator=gen),
        memory_pos=torch.randn(m, batch, MEM_DIM, generator=gen),
        num_obj_ptr_tokens=ptrs,
    )


@pytest.mark.parametrize("side,num_layers", [(32, 4), (64, 1)])
def test_memory_attention_matches_reference(side, num_layers):
    ref, ours = build_memory_attention_pair(num_layers)
    inputs = memory_inputs(side)
    with torch.no_grad():
        expected = ref(**inputs)
        got = ours(**inputs)
    assert got.shape == (side * side, 2, D_MODEL)
    assert rel_err(got, expected) <= TOL
    assert [k for k in ours.state_dict() if k.startswith("layers.")][-1].startswith(
        f"layers.{num_layers - 1}."
    )


def test_memory_attention_accepts_lists_and_explicit_grid():
    ref, ours = build_memory_attention_pair(num_layers=2)
    inputs = memory_inputs(16, frames=3, ptrs=0, seed=1)
    with torch.no_grad():
        expected = ref(**{**inputs, "curr": [inputs["curr"]], "curr_pos": [inputs["curr_pos"]]})
        got = ours(**{**inputs, "curr": [inputs["curr"]], "curr_pos": [inputs["curr_pos"]]})
        assert rel_err(got, expected) <= TOL
        assert torch.equal(ours(**inputs, grid_hw=(16, 16)), got)


def test_memory_attention_layers_are_independent_copies():
    _, ours = build_memory_attention_pair(num_layers=2)
    w0, w1 = ours.layers[0].linear1.weight, ours.layers[1].linear1.weight
    assert w0.data_ptr() != w1.data_ptr() and not torch.equal(w0, w1)


def test_memory_attention_dropout_matches_reference_in_train_mode():
    ref, ours = build_memory_attention_pair(num_layers=2, dropout=0.3)
    ref.train(), ours.train()
    inputs = memory_inputs(8, ptrs=2, seed=2)
    torch.manual_seed(123)
    expected = ref(**inputs)
    torch.manual_seed(123)
    got = ours(**inputs)
    assert rel_err(got, expected) <= TOL
    with torch.no_grad():
        assert rel_err(ours.eval()(**inputs), got) > 1e-2  # dropout was active in training


def test_memory_attention_runs_in_bf16():
    _, ours = build_memory_attention_pair(num_layers=2)
    inputs = memory_inputs(16, seed=3)
    with torch.no_grad():
        expected = ours(**inputs)
        bf16 = {k: v.bfloat16() if torch.is_tensor(v) else v for k, v in inputs.items()}
        got = ours.to(torch.bfloat16)(**bf16)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, expected) <= 5e-2


# ------------------------------------------------------------------- memory encoder


def build_memory_encoder_pair():
    """Reference and masklet MemoryEncoder with the official config, shared random weights."""
    require_reference()
    from sam2.modeling import memory_encoder as ref_me
    from sam2.modeling.position_encoding import PositionEmbeddingSine as RefPositionEmbeddingSine

    ref = ref_me.MemoryEncoder(
        out_dim=MEM_DIM,
        mask_downsampler=ref_me.MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=ref_me.Fuser(
            ref_me.CXBlock(256, kernel_size=7, padding=3, layer_scale_init_value=1e-6),
            num_layers=2,
        ),
        position_encoding=RefPositionEmbeddingSine(num_pos_feats=MEM_DIM, normalize=True),
    )
    ours = MemoryEncoder(
        out_dim=MEM_DIM,
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(
            layer=CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6),
            num_layers=2,
        ),
        position_encoding=PositionEmbeddingSine(num_pos_feats=MEM_DIM, normalize=True),
    )
    randomize(ref, seed=5)
    load_into(ours, ref)
    return ref.eval(), ours.eval()


@pytest.fixture(scope="module")
def memory_encoder_pair():
    return build_memory_encoder_pair()


@pytest.mark.parametrize("mask_size", [512, 1024])
@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
def test_memory_encoder_matches_reference(memory_encoder_pair, mask_size, skip_mask_sigmoid):
    ref, ours = memory_encoder_pair
    side = mask_size // 16
    gen = torch.Generator().manual_seed(mask_size)
    pix_feat = torch.randn(1, 256, side, side, generator=gen)
    masks = 4 * torch.randn(1, 1, mask_size, mask_size, generator=gen)
    if skip_mask_sigmoid:
        masks = (masks > 0).float()  # the tracker passes (scaled) probabilities here
    with torch.no_grad():
        expected = ref(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        got = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert isinstance(got, MemoryEncoderOutput)
    assert got.vision_features.shape == (1, MEM_DIM, side, side)
    assert rel_err(got.vision_features, expected["vision_features"]) <= TOL
    assert len(got.vision_pos_enc) == 1
    assert rel_err(got.vision_pos_enc[0], expected["vision_pos_enc"][0]) <= TOL


def test_memory_encoder_sigmoid_flag_matters(memory_encoder_pair):
    _, ours = memory_encoder_pair
    pix_feat, masks = torch.randn(1, 256, 8, 8), 3 * torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        with_sigmoid = ours(pix_feat, masks).vision_features
        assert torch.allclose(with_sigmoid, ours(pix_feat, masks.sigmoid(), True).vision_features)
        assert rel_err(ours(pix_feat, masks, True).vision_features, with_sigmoid) > 1e-3


def test_cx_block_residual_path_and_no_layer_scale():
    require_reference()
    from sam2.modeling.memory_encoder import CXBlock as RefCXBlock

    ref = RefCXBlock(32, kernel_size=7, padding=3, layer_scale_init_value=0.0)
    ours = CXBlock(dim=32, kernel_size=7, padding=3, layer_scale_init_value=0.0)
    randomize(ref, seed=7)
    load_into(ours, ref)
    assert ours.gamma is None
    x = torch.randn(2, 32, 12, 12)
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) <= TOL
        assert rel_err(ours(x), x) > 1e-2


def test_mask_downsampler_rejects_bad_stride():
    with pytest.raises(ValueError):
        MaskDownSampler(stride=3, total_stride=16)
