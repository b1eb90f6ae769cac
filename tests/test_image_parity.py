"""Parity of masklet's model and image predictor with the official SAM 2 (same random weights).

tiny and small run in the default suite; the other six official presets in the slow suite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require_data
from reference import build_reference, rel_err

from masklet import ImagePredictor, build_model

TOL = 1e-3
FAST = ["sam2.1_hiera_tiny", "sam2.1_hiera_small"]
SLOW = [
    "sam2.1_hiera_base_plus", "sam2.1_hiera_large",
    "sam2_hiera_tiny", "sam2_hiera_small", "sam2_hiera_base_plus", "sam2_hiera_large",
]
PRESET_PARAMS = FAST + [pytest.param(p, marks=pytest.mark.slow) for p in SLOW]


class Pair:
    """Our predictor and the reference's, on the same weights and the same photo."""

    def __init__(self, preset: str):
        self.ref_model = build_reference(preset)  # installs the torchvision stand-in first
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = build_model(preset, checkpoint=self.ref_model.state_dict())
        self.ours = ImagePredictor(self.model)
        self.ref = SAM2ImagePredictor(self.ref_model)
        self.photo = np.asarray(_open_rgb(require_data("images", "truck.jpg")))
        with torch.inference_mode():
            self.ours.set_image(self.photo)
            self.ref.set_image(self.photo)


def _open_rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(params=PRESET_PARAMS, scope="module")
def pair(request) -> Pair:
    # Module scope: pytest then runs every test of one preset before building the next.
    return Pair(request.param)


def test_state_dict_keys_are_official(pair):
    assert set(pair.model.state_dict()) == set(pair.ref_model.state_dict())


def test_image_encoder_every_level(pair):
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = pair.model.image_encoder(x)
        ref = pair.ref_model.image_encoder(x)
    assert rel_err(ours.vision_features, ref["vision_features"]) < TOL
    assert len(ours.backbone_fpn) == len(ref["backbone_fpn"]) == 3
    for a, b in zip(ours.backbone_fpn, ref["backbone_fpn"]):
        assert rel_err(a, b) < TOL
    for a, b in zip(ours.vision_pos_enc, ref["vision_pos_enc"]):
        assert rel_err(a, b) < TOL


def test_set_image_features_match(pair):
    ours = pair.ours._state.features
    ref = pair.ref._features
    assert rel_err(ours.image_embed, ref["image_embed"]) < TOL
    for a, b in zip(ours.high_res_feats, ref["high_res_feats"]):
        assert rel_err(a, b) < TOL


def _h_w(pair):
    return pair.photo.shape[:2]


PROMPTS = {
    "one_click": dict(point_coords=[[900.0, 600.0]], point_labels=[1]),
    "clicks": dict(point_coords=[[900.0, 600.0], [300.0, 250.0], [1500, 900]],
                   point_labels=[1, 0, 1]),
    "box": dict(box=[450.0, 300.0, 1500.0, 1000.0]),
    "clicks_and_box": dict(point_coords=[[900.0, 600.0], [200.0, 200.0]], point_labels=[1, 0],
                           box=[450.0, 300.0, 1500.0, 1000.0]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_predict_matches_reference(pair, prompt, multimask):
    kwargs = dict(PROMPTS[prompt], multimask_output=multimask, return_logits=True)
    ours = pair.ours.predict(**kwargs)
    ref = pair.ref.predict(**kwargs)
    _assert_prediction_close(ours, ref, _h_w(pair), 3 if multimask else 1)


def test_mask_input_round(pair):
    first = pair.ref.predict(**PROMPTS["one_click"], multimask_output=True)
    best = first[2][np.argmax(first[1])][None]
    kwargs = dict(point_coords=[[900.0, 600.0], [1400.0, 700.0]], point_labels=[1, 1],
                  mask_input=best, multimask_output=False, return_logits=True)
    _assert_prediction_close(pair.ours.predict(**kwargs), pair.ref.predict(**kwargs),
                             _h_w(pair), 1)


def test_binary_masks_agree(pair):
    ours, _, _ = pair.ours.predict(**PROMPTS["clicks_and_box"], multimask_output=True)
    ref, _, _ = pair.ref.predict(**PROMPTS["clicks_and_box"], multimask_output=True)
    # Like the official predictor, binary masks come back as float32 zeros and ones.
    assert ours.dtype == ref.dtype == np.float32 and ours.shape == ref.shape
    assert set(np.unique(ours).tolist()) <= {0.0, 1.0}
    # Pixels whose logit is within rounding of the threshold may flip; nothing more.
    assert np.mean(ours != ref) < 1e-4


def _assert_prediction_close(ours, ref, hw, num_masks):
    masks, ious, low = ours
    assert masks.shape == (num_masks, *hw)
    assert ious.shape == (num_masks,)
    assert low.shape == (num_masks, 256, 256)
    assert rel_err(low, ref[2]) < TOL
    assert rel_err(ious, ref[1]) < TOL
    assert rel_err(masks, ref[0]) < TOL


@pytest.mark.parametrize("multimask", [True, False])
def test_sam_heads_object_scores_and_pointer(pair, multimask):
    """The decoder path used for video: object-score logits and object pointers too."""
    feats = pair.ours._state.features
    coords = torch.tensor([[[500.0, 400.0], [100.0, 900.0]]])
    labels = torch.tensor([[1, 0]], dtype=torch.int32)
    with torch.inference_mode():
        ours = pair.model.forward_sam_heads(
            feats.image_embed, feats.high_res_feats, points=(coords, labels),
            multimask_output=multimask,
        )
        ref = pair.ref_model._forward_sam_heads(
            backbone_features=pair.ref._features["image_embed"],
            point_inputs={"point_coords": coords, "point_labels": labels},
            high_res_features=pair.ref._features["high_res_feats"],
            multimask_output=multimask,
        )
    names = ["low_res_multimasks", "high_res_multimasks", "ious", "low_res_masks",
             "high_res_masks", "obj_ptr", "object_score_logits"]
    for name, ref_value in zip(names, ref):
        assert rel_err(getattr(ours, name), ref_value) < TOL, name


# The batch path does not depend on the preset: small's run (17 s here) is a slow test.
@pytest.mark.parametrize("pair", [FAST[0], *(pytest.param(p, marks=pytest.mark.slow)
                                             for p in FAST[1:] + SLOW)], indirect=True)
def test_batch_of_two_images(pair):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    images = [pair.photo, np.asarray(_open_rgb(require_data("images", "groceries.jpg")))]
    ref = SAM2ImagePredictor(pair.ref_model)
    with torch.inference_mode():
        pair.ours.set_image_batch(images)
        ref.set_image_batch(images)
    try:
        kwargs = dict(point_coords_batch=[np.array([[400.0, 300.0]]), np.array([[250.0, 200.0]])],
                      point_labels_batch=[np.array([1]), np.array([1])],
                      box_batch=[None, np.array([100.0, 100.0, 600.0, 500.0])],
                      multimask_output=True, return_logits=True)
        ours = pair.ours.predict_batch(**kwargs)
        theirs = ref.predict_batch(**kwargs)
        for i, image in enumerate(images):
            _assert_prediction_close([o[i] for o in ours], [t[i] for t in theirs],
                                     image.shape[:2], 3)
    finally:
        pair.ours.set_image(pair.photo)  # leave the shared pair as the other tests expect
