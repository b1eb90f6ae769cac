"""Parity of the SAM prompt encoder, two-way transformer and mask decoder with sam2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import require_reference
from reference import rel_err

from masklet.modeling.mask_decoder import MaskDecoder
from masklet.modeling.prompt_encoder import PromptEncoder
from masklet.modeling.transformer import TwoWayTransformer

DIM = 256
TOL = 1e-4

# Decoder settings of the official checkpoints (sam2_base._build_sam_heads + build_sam).
SAM21 = dict(
    use_high_res_features=True,
    iou_prediction_use_sigmoid=True,
    pred_obj_scores=True,
    pred_obj_scores_mlp=True,
    use_multimask_token_for_obj_ptr=True,
    dynamic_multimask_via_stability=True,
    dynamic_multimask_stability_delta=0.05,
    dynamic_multimask_stability_thresh=0.98,
)
PLAIN = dict(
    use_high_res_features=False,
    iou_prediction_use_sigmoid=False,
    pred_obj_scores=False,
    pred_obj_scores_mlp=False,
    use_multimask_token_for_obj_ptr=False,
)
NO_SIGMOID = dict(SAM21, iou_prediction_use_sigmoid=False, pred_obj_scores_mlp=False)
VARIANTS = {"sam2.1": SAM21, "plain": PLAIN, "no_sigmoid": NO_SIGMOID}



def randomize(module: nn.Module, seed: int, std: float = 0.05) -> None:
    """Random weights everywhere; norm weights near 1 so no parameter stays at its init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            # Only norm layers have 1-D weights.
            is_norm_weight = param.dim() == 1 and name.endswith("weight")
            param.copy_(1 + 0.1 * noise if is_norm_weight else std * noise)


def load_into(ours: nn.Module, ref: nn.Module) -> None:
    ref_sd = ref.state_dict()
    assert set(ours.state_dict()) == set(ref_sd)
    ours.load_state_dict(ref_sd, strict=True)


def build_prompt_encoders(seed: int = 0):
    require_reference()
    from sam2.modeling.sam.prompt_encoder import PromptEncoder as RefPromptEncoder

    args = dict(
        embed_dim=DIM, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
        mask_in_chans=16,
    )
    torch.manual_seed(seed)
    ref = RefPromptEncoder(**args).eval()
    randomize(ref, seed)
    ours = PromptEncoder(**args).eval()
    load_into(ours, ref)
    return ours, ref


def build_decoders(variant: dict, seed: int = 0):
    require_reference()
    from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as RefTransformer

    tf_args = dict(depth=2, embedding_dim=DIM, mlp_dim=2048, num_heads=8)
    args = dict(
        num_multimask_outputs=3, transformer_dim=DIM, iou_head_depth=3, iou_head_hidden_dim=256,
        **variant,
    )
    ref = RefMaskDecoder(transformer=RefTransformer(**tf_args), **args).eval()
    randomize(ref, seed)
    ours = MaskDecoder(transformer=TwoWayTransformer(**tf_args), **args).eval()
    load_into(ours, ref)
    return ours, ref


def decoder_inputs(num_prompts: int, size: int, *, num_images: int | None = None, seed: int = 1):
    """Random decoder inputs for an image embedding of size x size (masks 4x larger)."""
    gen = torch.Generator().manual_seed(seed)
    num_images = num_prompts if num_images is None else num_images
    return dict(
        image_embeddings=torch.randn(num_images, DIM, size, size, generator=gen),
        image_pe=torch.randn(1, DIM, size, size, generator=gen),
        sparse_prompt_embeddings=torch.randn(num_prompts, 3, DIM, generator=gen),
        dense_prompt_embeddings=torch.randn(num_prompts, DIM, size, size, generator=gen),
        high_res_features=[
            torch.randn(num_prompts, DIM // 8, 4 * size, 4 * size, generator=gen),
            torch.randn(num_prompts, DIM // 4, 2 * size, 2 * size, generator=gen),
        ],
    )


def compare_decoders(ours, ref, inputs: dict, **flags) -> float:
    with torch.no_grad():
        expected = ref(**inputs, **flags)
        got = ours(**inputs, **flags)
    fields = (got.masks, got.iou_pred, got.sam_tokens_out, got.object_score_logits)
    errors = [rel_err(o, r) for o, r in zip(fields, expected)]
    assert max(errors) <= TOL, errors
    return max(errors)


# ----------------------------------------------------------------------------- prompt encoder


def test_prompt_encoder_state_dict_names():
    ours, ref = build_prompt_encoders()
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.mask_input_size == ref.mask_input_size == (256, 256)


def _points(batch: int, num: int, labels: list[int], seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, num, 2, generator=gen) * 1023
    return coords, torch.tensor(labels, dtype=torch.int32).expand(batch, num).contiguous()


def _boxes(batch: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    corners = torch.rand(batch, 2, 2, generator=gen).sort(dim=1).values * 1000
    return corners.reshape(batch, 4)


@pytest.mark.parametrize(
    "case", ["points", "points_box", "box", "mask", "points_mask", "none", "box_labels"]
)
def test_prompt_encoder_parity(case):
    ours, ref = build_prompt_encoders()
    gen = torch.Generator().manual_seed(4)
    points = boxes = masks = None
    if case in ("points", "points_box", "points_mask"):
        # Includes a padding point, and label 4, which both models leave without a type embedding.
        points = _points(2, 5, [1, 0, -1, 1, 4])
    if case in ("points_box", "box"):
        boxes = _boxes(2)
    if case == "box_labels":
        # How the video model passes boxes: as two points labelled 2 and 3.
        points = _points(3, 3, [2, 3, 1])
    if case in ("mask", "points_mask"):
        masks = torch.randn(2, 1, 256, 256, generator=gen) * 5
    with torch.no_grad():
        ref_sparse, ref_dense = ref(points, boxes, masks)
        sparse, dense = ours(points, boxes, masks)
    expected_tokens = {"points": 6, "points_box": 7, "box": 2, "mask": 0, "points_mask": 6,
                       "none": 0, "box_labels": 4}[case]
    assert sparse.shape[1] == expected_tokens
    assert dense.shape[1:] == (DIM, 64, 64)
    assert rel_err(sparse, ref_sparse) <= TOL
    assert rel_err(dense, ref_dense) <= TOL


def test_dense_pe_follows_loaded_weights():
    ours, ref = build_prompt_encoders(seed=0)
    before = ours.get_dense_pe()
    _, other = build_prompt_encoders(seed=5)
    ours.load_state_dict(other.state_dict(), strict=True)
    after = ours.get_dense_pe()
    assert after.shape == (1, DIM, 64, 64)
    assert rel_err(after, other.get_dense_pe()) <= TOL
    assert rel_err(before, ref.get_dense_pe()) <= TOL
    assert not torch.allclose(before, after)


# ----------------------------------------------------------------------------- transformer


def test_two_way_transformer_parity():
    require_reference()
    from sam2.modeling.sam.transformer import TwoWayTransformer as RefTransformer

    args = dict(depth=2, embedding_dim=DIM, mlp_dim=2048, num_heads=8)
    ref = RefTransformer(**args).eval()
    randomize(ref, 6)
    ours = TwoWayTransformer(**args).eval()
    load_into(ours, ref)
    gen = torch.Generator().manual_seed(7)
    image = torch.randn(2, DIM, 16, 16, generator=gen)
    pe = torch.randn(1, DIM, 16, 16, generator=gen)
    tokens = torch.randn(2, 9, DIM, generator=gen)
    with torch.no_grad():
        ref_q, ref_k = ref(image, pe.expand(2, -1, -1, -1), tokens)
        q, k = ours(image, pe, tokens)
    assert rel_err(q, ref_q) <= TOL
    assert rel_err(k, ref_k) <= TOL


# ----------------------------------------------------------------------------- mask decoder


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decoder_state_dict_names(name):
    ours, ref = build_decoders(VARIANTS[name])
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_decoder_parity(name, multimask):
    variant = VARIANTS[name]
    ours, ref = build_decoders(variant)
    inputs = decoder_inputs(2, 8)
    if not variant["use_high_res_features"]:
        inputs["high_res_features"] = None
    compare_decoders(ours, ref, inputs, multimask_output=multimask, repeat_image=False)
    got = ours(**inputs, multimask_output=multimask, repeat_image=False)
    num_masks = 3 if multimask else 1
    assert got.masks.shape == (2, num_masks, 32, 32)
    assert got.iou_pred.shape == (2, num_masks)
    token_count = 3 if multimask and variant["use_multimask_token_for_obj_ptr"] else 1
    assert got.sam_tokens_out.shape == (2, token_count, DIM)
    assert got.object_score_logits.shape == (2, 1)


def test_decoder_official_size_high_res():
    ours, ref = build_decoders(SAM21)
    inputs = decoder_inputs(1, 64)
    compare_decoders(ours, ref, inputs, multimask_output=True, repeat_image=False)


def test_decoder_repeat_image():
    ours, ref = build_decoders(SAM21)
    inputs = decoder_inputs(3, 8, num_images=1)
    for multimask in (True, False):
        compare_decoders(ours, ref, inputs, multimask_output=multimask, repeat_image=True)


def test_decoder_training_mode_skips_dynamic_selection():
    ours, ref = build_decoders(SAM21)
    ours.train()
    ref.train()
    inputs = decoder_inputs(2, 8)
    compare_decoders(ours, ref, inputs, multimask_output=False, repeat_image=False)


def _stability(logits: torch.Tensor, delta: float) -> torch.Tensor:
    """Reference-independent stability score of [B, H, W] logits."""
    inner = (logits > delta).flatten(1).sum(1).float()
    outer = (logits > -delta).flatten(1).sum(1).float()
    return torch.where(outer > 0, inner / outer, 1.0)


def _make_stability_mixed(ref, inputs: dict, delta: float, thresh: float) -> None:
    """Rescale the single-mask hypernetwork so that some prompts are stable and some not.

    A rank-1 last layer makes mask-0 logits scale with a prompt-dependent factor; a global
    factor alpha then moves the scores, and since the logits are linear in alpha, the
    stability at alpha is that of the unscaled logits at delta / alpha.
    """
    last = ref.output_hypernetworks_mlps[0].layers[-1]
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        u = torch.randn(last.weight.shape[0], 1, generator=gen)
        v = torch.randn(1, last.weight.shape[1], generator=gen)
        last.weight.copy_(u @ v / last.weight.shape[1] ** 0.5)
        last.bias.zero_()
        logits = ref.predict_masks(**inputs, repeat_image=False)[0][:, 0]
        best_alpha, best_margin = None, 0.0
        for alpha in torch.logspace(-3, 3, 121).tolist():
            scores = _stability(logits, delta / alpha)
            stable = scores >= thresh
            margin = (scores - thresh).abs().min().item()
            if stable.any() and not stable.all() and margin > best_margin:
                best_alpha, best_margin = alpha, margin
        assert best_alpha is not None and best_margin > 2e-3, "could not mix stability"
        last.weight.mul_(best_alpha)


def test_decoder_dynamic_multimask_both_branches():
    variant = SAM21
    ours, ref = build_decoders(variant)
    inputs = decoder_inputs(8, 8, seed=9)
    delta = variant["dynamic_multimask_stability_delta"]
    thresh = variant["dynamic_multimask_stability_thresh"]
    _make_stability_mixed(ref, inputs, delta, thresh)
    load_into(ours, ref)

    with torch.no_grad():
        all_masks, all_iou = ref.predict_masks(**inputs, repeat_image=False)[:2]
    stable = ref._get_stability_scores(all_masks[:, 0:1])[:, 0] >= thresh
    assert stable.any() and not stable.all(), stable

    compare_decoders(ours, ref, inputs, multimask_output=False, repeat_image=False)
    got = ours(**inputs, multimask_output=False, repeat_image=False)
    best = all_iou[:, 1:].argmax(dim=1) + 1
    for i in range(len(stable)):
        source = 0 if stable[i] else best[i].item()
        assert rel_err(got.masks[i, 0], all_masks[i, source]) <= TOL
        assert rel_err(got.iou_pred[i, 0], all_iou[i, source]) <= TOL


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decoder_forward_both_is_two_forwards(name):
    """One transformer pass for both outputs (the ONNX decoder graph) gives what two
    `forward` calls give; the variants cover the dynamic single-mask fallback, no object
    score head and the multimask pointer tokens."""
    variant = VARIANTS[name]
    ours, _ = build_decoders(variant)
    inputs = decoder_inputs(3, 8, seed=4)
    if not variant["use_high_res_features"]:
        inputs["high_res_features"] = None
    with torch.no_grad():
        both = ours.forward_both(**inputs)
        for multimask, got in zip((True, False), both):
            want = ours(**inputs, multimask_output=multimask, repeat_image=False)
            for field in ("masks", "iou_pred", "sam_tokens_out", "object_score_logits"):
                a, b = getattr(got, field), getattr(want, field)
                assert a.shape == b.shape, (field, multimask)
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{field} {multimask}")
