"""The inference speed paths give the same results as the plain paths they replace.

Each fast path (late value projection with the blocked attention kernel, in-place complex
rotary encoding, fused oneDNN linears, banded windowed blocks, row-chunked MLPs, the
cached position embedding, objects batched through memory attention) is compared with
the straightforward computation, and the bf16 precision switch with fp32.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_objects_present
from reference import rel_err

from masklet import StreamingTracker, VideoPredictor, build_model, get_config
from masklet.modeling import blocked_attention as blocked
from masklet.modeling.common import MLP, by_row_chunks, linear, linear_activation
from masklet.modeling.hiera import MultiScaleBlock
from masklet.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from masklet.modeling.rope import (
    RoPEAttention,
    apply_axial_rope,
    rope_tables,
    rotate_pairs,
)
from masklet.tracking.batched import track_objects
from masklet.tracking.precision import check_precision, inference_context
from masklet.tracking.state import FrameOutput, ObjectState
from masklet.tracking.step import track_frame


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



# ------------------------------------------------------------------ attention kernels


@pytest.mark.parametrize("batch_q,batch_k,heads,nq,nk,dv", [
    (1, 1, 1, 300, 1100, 8),      # partial query and key blocks
    (1, 3, 1, 64, 700, 16),       # queries shared by three key sets
    (2, 2, 2, 1030, 520, 12),     # several heads, more than one query block
])
def test_blocked_attention_equals_softmax_attention(batch_q, batch_k, heads, nq, nk, dv):
    gen = torch.Generator().manual_seed(nq)
    q = torch.randn(batch_q, heads, nq, 32, generator=gen)
    k = torch.randn(batch_k, heads, nk, 32, generator=gen)
    v = torch.randn(batch_k, 1, nk, dv, generator=gen)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, -1) @ v
    got = blocked.blocked_attention(q, k, v)
    assert got.shape == (batch_k, heads, nq, dv)
    assert rel_err(got, expected) < 1e-5


def test_blocked_attention_recovers_when_later_scores_overflow_the_first_shift():
    """Keys past the first block score ~200 higher: exp relative to the first block's
    maximum overflows, and the kernel must redo the block with the running maximum."""
    q = torch.full((1, 1, 8, 4), 1.0)
    k = torch.zeros(1, 1, 2 * blocked.KEY_BLOCK, 4)
    k[..., blocked.KEY_BLOCK + 5, :] = 200.0  # score 400 / sqrt(4) = 200
    v = torch.randn(1, 1, 2 * blocked.KEY_BLOCK, 3)
    got = blocked.blocked_attention(q, k, v)
    assert torch.isfinite(got).all()
    assert torch.allclose(got[0, 0], v[0, 0, blocked.KEY_BLOCK + 5].expand(8, 3), atol=1e-6)


def _cross_attention(heads: int) -> RoPEAttention:
    torch.manual_seed(heads)
    attn = RoPEAttention(embedding_dim=64, num_heads=heads, kv_in_dim=16, rope_k_repeat=True,
                         feat_sizes=(8, 8)).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.2)
    return attn


@pytest.mark.parametrize("heads", [1, 2])
def test_late_value_projection_equals_projected_values(heads):
    attn = _cross_attention(heads)
    q, kv = torch.randn(2, 64, 64), torch.randn(2, 3 * 64 + 5, 16)
    with torch.enable_grad():
        assert not attn.values_late()  # autograd: the plain SDPA path
        expected = attn(q, kv, kv, num_k_exclude_rope=5)
    with torch.no_grad():
        assert attn.values_late()
        got = attn(q, kv, kv, num_k_exclude_rope=5)
        # Queries of batch 1 are shared by both key sets.
        shared = attn(q[:1], kv, kv, num_k_exclude_rope=5)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(shared, attn(q[:1].expand(2, -1, -1), kv, kv, 5).detach()) < 1e-5


def test_late_values_not_used_with_dropout_or_in_bf16():
    attn = _cross_attention(1)
    attn.dropout_p = 0.1
    with torch.no_grad():
        assert attn.eval().values_late()
        assert not attn.train().values_late()
        attn.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not attn.values_late()


@pytest.mark.parametrize("inplace", [False, True])
def test_complex_rope_equals_real_rotation(inplace):
    cos, sin = rope_tables(6, 5, 16, 10000.0, torch.device("cpu"), torch.float32)
    q, k = torch.randn(2, 2, 30, 16), torch.randn(2, 2, 2 * 30 + 3, 16)
    expected_q = rotate_pairs(q, cos, sin)
    rotated = rotate_pairs(k[:, :, :60].unflatten(2, (2, 30)), cos, sin).flatten(2, 3)
    expected_k = torch.cat([rotated, k[:, :, 60:]], dim=2)
    with torch.no_grad():
        got_q, got_k = apply_axial_rope(q.clone(), k.clone(), cos, sin, repeat_k=True,
                                        num_k_exclude=3, inplace=inplace)
    assert rel_err(got_q, expected_q) < 1e-6 and rel_err(got_k, expected_k) < 1e-6


# ------------------------------------------------------------------ fused / chunked ops


@pytest.mark.parametrize("act", [F.relu, torch.nn.GELU(), torch.nn.ReLU(), torch.tanh])
def test_fused_linear_activation_equals_plain(act):
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        assert rel_err(linear_activation(x, layer, act), act(layer(x))) < 1e-6
        assert rel_err(linear(x, layer), layer(x)) < 1e-6


def test_row_chunks_equal_whole_and_keep_autograd_whole():
    mlp = MLP(16, 64, 8, 3)
    x = torch.randn(5, 1000, 16)  # 5000 rows: several chunks and a partial one
    with torch.no_grad():
        got = mlp(x)
        calls = []
        by_row_chunks(lambda c: calls.append(c.shape[:-1].numel()) or c, x)
    assert len(calls) > 1 and sum(calls) == 5000
    assert rel_err(got, mlp(x).detach()) < 1e-6  # with autograd: one piece
    calls.clear()
    by_row_chunks(lambda c: calls.append(c.shape[:-1].numel()) or c, x.requires_grad_())
    assert calls == [5000]


@pytest.mark.parametrize("window,q_stride,height,width", [
    (8, None, 70, 70),     # padded rows and columns
    (4, (2, 2), 64, 72),   # pooling, whole windows
    (6, (2, 2), 70, 66),   # pooling, the last band padded
])
def test_banded_windowed_block_equals_whole_grid(window, q_stride, height, width):
    torch.manual_seed(window)
    block = MultiScaleBlock(dim=16, dim_out=32 if q_stride else 16, num_heads=2,
                            window_size=window, q_stride=q_stride).eval()
    x = torch.randn(1, height, width, 16)  # more tokens than one band holds
    with torch.no_grad():
        assert block._band_rows(x) is not None
        banded = block(x)
        whole = block._forward_grid(x)
    assert banded.shape == whole.shape
    assert rel_err(banded, whole) < 1e-6


def test_cached_position_embedding_follows_new_weights():
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(128), random_weights=True)
    trunk = model.image_encoder.trunk
    with torch.no_grad():
        first = trunk._position_embedding(32, 32)
        assert trunk._position_embedding(32, 32) is first  # cached
        trunk.pos_embed.add_(1.0)  # as an optimizer step or load_state_dict would
        second = trunk._position_embedding(32, 32)
    assert second is not first
    assert torch.allclose(second, trunk._compute_position_embedding(32, 32).detach())


# ------------------------------------------------------------------ batched objects


def _memory_attention(layers: int = 2) -> MemoryAttention:
    torch.manual_seed(layers)

    def attn(**kw):
        return RoPEAttention(embedding_dim=32, num_heads=1, feat_sizes=(4, 4), **kw)

    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=attn(kv_in_dim=8, rope_k_repeat=True),
        d_model=32, dim_feedforward=64, dropout=0.0, pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention=attn())
    ma = MemoryAttention(d_model=32, pos_enc_at_input=True, layer=layer, num_layers=layers)
    with torch.no_grad():
        for p in ma.parameters():
            p.normal_(0, 0.3)
    return ma.eval()


def test_memory_attention_shares_one_frame_between_objects():
    ma = _memory_attention()
    curr, pos = torch.randn(16, 1, 32), torch.randn(16, 1, 32)
    memory, memory_pos = torch.randn(2 * 16 + 4, 3, 8), torch.randn(2 * 16 + 4, 3, 8)
    with torch.no_grad():
        shared = ma(curr, memory, pos, memory_pos, num_obj_ptr_tokens=4)
        expanded = ma(curr.expand(-1, 3, -1), memory, pos.expand(-1, 3, -1), memory_pos, 4)
        alone = [ma(curr, memory[:, i : i + 1], pos, memory_pos[:, i : i + 1], 4) for i in range(3)]
    assert shared.shape == (16, 3, 32)
    assert rel_err(shared, expanded) < 1e-6
    assert all(rel_err(shared[:, i : i + 1], a) < 1e-6 for i, a in enumerate(alone))
    with pytest.raises(ValueError):
        ma(torch.randn(16, 2, 32), memory, torch.randn(16, 2, 32), memory_pos, 4)


@pytest.fixture(scope="module")
def small_model():
    """Tiny with a reduced trunk and two memory-attention layers at 64 px."""
    base = get_config("sam2.1_hiera_tiny").with_image_size(64)
    trunk = dataclasses.replace(base.trunk, embed_dim=16, stages=(1, 1, 1, 1),
                                global_att_blocks=())
    memory = dataclasses.replace(base.memory, attention_layers=2, attention_ffn_dim=128)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(base, trunk=trunk, memory=memory),
                        random_weights=True).eval()
    make_objects_present(model)
    return model


def _object(obj_id: int, gen: torch.Generator, prompted: tuple[int, ...]) -> ObjectState:
    obj = ObjectState(obj_id)
    for t in prompted:
        obj.cond_outputs[t] = FrameOutput(
            torch.randn(1, 1, 16, 16, generator=gen), torch.randn(1, 256, generator=gen),
            torch.ones(1, 1), torch.randn(1, 64, 4, 4, generator=gen).bfloat16())
    return obj


def test_batched_objects_equal_tracking_each_alone(small_model):
    gen = torch.Generator().manual_seed(3)
    # Two objects with one prompted frame batch together; the third (two prompted
    # frames, a longer memory) forms its own group.
    objects = [_object(1, gen, (0,)), _object(2, gen, (0,)), _object(3, gen, (0, 1))]
    with torch.inference_mode():
        feats = small_model.forward_image(torch.randn(1, 3, 64, 64, generator=gen))
        together = track_objects(small_model, feats, 2, objects, 10, False, fill_hole_area=8)
        for obj, out in zip(objects, together):
            alone = track_frame(small_model, feats, 2, False, None, None, obj.cond_outputs,
                                obj.non_cond_outputs, 10, False, run_mem_encoder=True,
                                fill_hole_area=8)
            for name in ("pred_masks", "obj_ptr", "object_score_logits", "maskmem_features"):
                assert torch.equal(getattr(out, name), getattr(alone, name)), name
        with pytest.raises(ValueError):
            track_objects(small_model, feats.select(torch.tensor([0, 0])), 2, objects, 10,
                          False, fill_hole_area=0)


# ------------------------------------------------------------------ precision


def _moving_disc(num: int = 6, size: int = 96) -> list[np.ndarray]:
    frames = []
    yy, xx = np.mgrid[:size, :size]
    for t in range(num):
        disc = (yy - 48) ** 2 + (xx - 30 - 5 * t) ** 2 < 15**2
        frame = np.full((size, size, 3), 30, np.uint8)
        frame[disc] = (230, 200, 40)
        frames.append(frame)
    return frames


def _track(model, precision: str, frames, stream: bool = False) -> list[torch.Tensor]:
    if stream:
        with StreamingTracker(model, precision=precision, prefetch=0).start(frames) as s:
            s.add_points(1, [[30, 48]], [1])
            return [f.masks for f in s]
    predictor = VideoPredictor(model, precision=precision, progress=False)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[30, 48]], labels=[1])
    masks = []
    for _, _, m in predictor.propagate_in_video(state):
        # The caller's code between frames runs outside the predictor's precision.
        assert not torch.is_autocast_enabled("cpu") and not torch.is_inference_mode_enabled()
        masks.append(m)
    return masks


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


def test_bf16_precision_runs_and_agrees_with_fp32():
    torch.manual_seed(0)
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(128), random_weights=True)
    make_objects_present(model)
    frames = _moving_disc()
    fp32 = _track(model, "fp32", frames)
    bf16 = _track(model, "bf16", frames)
    assert all(m.dtype == torch.float32 for m in bf16)
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the predictor
    # Random weights give arbitrary masks; the logit maps themselves must agree.
    assert all(m.std() > 0.01 for m in fp32)
    assert min(_correlation(a, b) for a, b in zip(fp32, bf16)) > 0.98
    assert max(rel_err(b, a) for a, b in zip(fp32, bf16)) > 1e-4  # bf16 really ran
    # The streaming tracker uses the same switch and gives the offline bf16 masks.
    streamed = _track(model, "bf16", frames, stream=True)
    assert all(torch.equal(a, b) for a, b in zip(streamed, bf16))


def test_precision_switch_is_checked_and_scoped():
    with pytest.raises(ValueError, match="bf16"):
        check_precision("fp16")
    with pytest.raises(ValueError):
        VideoPredictor(build_model(get_config("sam2.1_hiera_tiny").with_image_size(64),
                                   random_weights=True),
                       precision="half")
    with inference_context("bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") and torch.is_inference_mode_enabled()
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("has_amx", [False, True])
def test_bf16_on_cpu_without_amx_warns(monkeypatch, has_amx):
    """bf16 is slower than fp32 on CPUs without native bf16: asking for it there says so
    (the flag-by-flag cases are in test_bf16.py)."""
    from masklet.tracking import precision

    monkeypatch.setattr(precision, "linux_cpu_flags", frozenset)  # no flags from the OS
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: has_amx, raising=False)
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(64), random_weights=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VideoPredictor(model, precision="bf16", progress=False)
        VideoPredictor(model, precision="fp32", progress=False)
    slow = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(slow) == (0 if has_amx else 1)
    assert check_precision("bf16", torch.device("meta")) == "bf16"  # not a CPU: no check
