"""Hole filling and sprinkle removal: hand-made masks with known answers, an independent
connected-components oracle, and the image predictor's use of both on a real photo.

Semantics (the official CUDA kernel's): 8-connected components; a "hole" is any
background component (``logit <= threshold``) of at most ``max_area`` pixels, whether
or not it touches the border; a "sprinkle" is such a foreground component.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require_data
from reference import build_reference, rel_err

from masklet import ImagePredictor, build_model, get_config
from masklet.io.images import load_image
from masklet.postprocess import clean_masks, component_areas, fill_holes, remove_sprinkles

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _logits(rows: list[str], fg: float = 3.0, bg: float = -2.0) -> torch.Tensor:
    """A [1, 1, H, W] logit map from a picture: '#' foreground, '.' background."""
    grid = torch.tensor([[c == "#" for c in r] for r in rows])
    return torch.where(grid, fg, bg)[None, None].float()


def _picture(logits: torch.Tensor, threshold: float = 0.0) -> list[str]:
    return ["".join("#" if v > threshold else "." for v in row) for row in logits[0, 0].tolist()]


def _oracle_areas(binary: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] bool -> component area per pixel, by 8-neighbour max-label propagation.

    Written independently of scipy: each foreground pixel starts with a unique label and
    takes the largest label in its 3x3 neighbourhood until nothing changes.
    """
    n, _, h, w = binary.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).expand(n, 1, h, w)
    labels = torch.where(binary, ids, 0.0)
    while True:
        grown = torch.where(binary, F.max_pool2d(labels, 3, stride=1, padding=1), 0.0)
        if torch.equal(grown, labels):
            break
        labels = grown
    areas = torch.zeros(n, 1, h, w, dtype=torch.int64)
    for i in range(n):
        lab = labels[i].long()
        areas[i] = torch.bincount(lab.flatten(), minlength=h * w + 1)[lab]
    return torch.where(binary, areas, 0)


# ----------------------------------------------------------------- known answers
def test_diagonal_pixels_form_one_component():
    speck = _logits(["....",
                     ".#..",
                     "..#.",
                     "...."])
    assert _picture(remove_sprinkles(speck, max_area=1)) == _picture(speck)  # area 2 > 1
    assert _picture(remove_sprinkles(speck, max_area=2)) == ["...."] * 4
    hole = -speck  # the same shape as a diagonal hole inside foreground
    assert _picture(fill_holes(hole, max_area=1)) == _picture(hole)
    assert _picture(fill_holes(hole, max_area=2)) == ["####"] * 4


def test_holes_touching_the_border_count_as_holes():
    mask = _logits(["..####",
                    "######",
                    "######",
                    "#####.",
                    "#####."])
    filled = fill_holes(mask, max_area=2)
    assert _picture(filled) == ["######"] * 5
    assert _picture(fill_holes(mask, max_area=1)) == _picture(mask)


def test_area_equal_to_the_limit_is_included():
    mask = _logits(["######",
                    "#..###",
                    "#..###",
                    "######"])
    assert _picture(fill_holes(mask, max_area=4)) == ["######"] * 4
    assert _picture(fill_holes(mask, max_area=3)) == _picture(mask)
    specks = -mask
    assert _picture(remove_sprinkles(specks, max_area=4)) == ["......"] * 4
    assert _picture(remove_sprinkles(specks, max_area=3)) == _picture(specks)


def test_fill_values_and_untouched_pixels():
    mask = _logits(["####",
                    "#.##",
                    "####",
                    "..#."], fg=2.5, bg=-1.5)
    default = fill_holes(mask, max_area=2, threshold=0.5)
    assert default[0, 0, 1, 1] == 10.5  # threshold + 10
    assert default[0, 0, 3, 0] == default[0, 0, 3, 3] == 10.5
    custom = fill_holes(mask, max_area=2, fill_value=0.1)
    assert custom[0, 0, 1, 1] == pytest.approx(0.1)
    keep = mask > -1.0  # pixels that were foreground stay bit-identical
    assert torch.equal(custom[keep], mask[keep])
    removed = remove_sprinkles(-mask, max_area=2, threshold=0.5)
    assert removed[0, 0, 1, 1] == -9.5  # threshold - 10
    assert remove_sprinkles(-mask, max_area=2, fill_value=-0.25)[0, 0, 1, 1] == -0.25


def test_a_logit_equal_to_the_threshold_is_background():
    mask = _logits(["###", "###", "###"])
    mask[0, 0, 1, 1] = 0.7
    assert fill_holes(mask, max_area=1, threshold=0.7)[0, 0, 1, 1] == 10.7
    assert fill_holes(mask, max_area=1, threshold=0.69)[0, 0, 1, 1] == pytest.approx(0.7)


def test_disabled_and_input_not_modified():
    mask = _logits(["#.#", "...", "#.#"])
    before = mask.clone()
    assert fill_holes(mask, max_area=0) is mask
    assert remove_sprinkles(mask, max_area=-1) is mask
    assert torch.equal(clean_masks(mask, 0, 0), mask)
    fill_holes(mask, max_area=5)
    remove_sprinkles(mask, max_area=5)
    clean_masks(mask, 5, 5)
    assert torch.equal(mask, before)


def test_batch_items_are_independent():
    hole_1 = _logits(["#####", "#####", "##.##", "#####", "#####"])
    all_bg = _logits(["....."] * 5)
    hole_3 = _logits(["#####", "#####", "#...#", "#####", "#####"])
    batch = torch.cat([hole_1, all_bg, hole_3])
    out = fill_holes(batch, max_area=2)
    # Were the batch labelled as one volume, item 0's hole would join item 1's background.
    assert _picture(out[0:1]) == ["#####"] * 5
    assert _picture(out[1:2]) == ["....."] * 5
    assert _picture(out[2:3]) == _picture(hole_3)


def test_clean_masks_finds_holes_and_specks_on_the_input():
    # A speck sitting inside a small hole: both are judged on the input masks, so the
    # filled ring does not make the speck part of the large region.
    mask = _logits(["#######",
                    "#######",
                    "##...##",
                    "##.#.##",
                    "##...##",
                    "#######"])
    out = clean_masks(mask, max_hole_area=8, max_sprinkle_area=1)
    assert _picture(out) == ["#######", "#######", "#######", "###.###", "#######", "#######"]
    assert out[0, 0, 3, 3] == -10.0 and out[0, 0, 2, 2] == 10.0
    # One step at a time on running results gives a different (sequential) answer.
    sequential = remove_sprinkles(fill_holes(mask, 8), 1)
    assert _picture(sequential) == ["#######"] * 6


def test_clean_masks_batch_and_multimask_shape():
    speck = _logits(["......", ".#....", "......", "....##", "....##", "......"])
    hole = -speck
    logits = torch.stack([torch.cat([speck, hole, speck]), torch.cat([hole, hole, speck])])[:, :, 0]
    assert logits.shape == (2, 3, 6, 6)
    out = clean_masks(logits, max_hole_area=1, max_sprinkle_area=1)
    assert out.shape == logits.shape
    for b in range(2):
        for m in range(3):
            one = logits[b, m][None, None]
            expected = clean_masks(one, 1, 1)
            assert torch.equal(out[b, m], expected[0, 0])
            # The 1-pixel region at (1, 1) is cleaned away; the 2x2 block stays.
            assert (out[b, m, 1, 1] > 0) != (logits[b, m, 1, 1] > 0)
            assert (out[b, m, 3, 4] > 0) == (logits[b, m, 3, 4] > 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_device_and_dtype_are_kept(device, dtype):
    mask = _logits(["####", "#.##", "####", "##.#"]).to(device, dtype)
    for out in (fill_holes(mask, 1), remove_sprinkles(-mask, 1), clean_masks(mask, 1, 1),
                fill_holes(mask, 1, fill_value=0.1)):
        assert out.device == mask.device and out.dtype == dtype
    assert _picture(fill_holes(mask, 1).float().cpu()) == ["####"] * 4
    assert component_areas(mask > 0).device == mask.device


# ----------------------------------------------------------------- oracle comparison
@pytest.mark.parametrize("seed", range(4))
def test_random_masks_match_an_independent_oracle(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 40, 33, generator=gen)
    logits = F.avg_pool2d(logits, 3, stride=1, padding=1)  # blobs of varied sizes
    for binary in (logits > 0.05, logits <= 0.05):
        assert torch.equal(component_areas(binary), _oracle_areas(binary))
    for limit in (1, 4, 15):
        bg_area = _oracle_areas(logits <= 0.05)
        fg_area = _oracle_areas(logits > 0.05)
        want = logits.clone()
        want[(bg_area > 0) & (bg_area <= limit)] = 10.05
        want[(fg_area > 0) & (fg_area <= limit)] = -9.95
        assert torch.equal(clean_masks(logits, limit, limit, threshold=0.05), want)


# ----------------------------------------------------------------- the image predictor
SIZE = 256
HOLE, SPRINKLE = 30, 30  # pixels of the 64x64 low-res masks at a 256 px input
CLICKS = dict(point_coords=np.array([[600.0, 450.0], [1200.0, 300.0]]),
              point_labels=np.array([1, 1]))


@pytest.fixture(scope="module")
def photo_and_model():
    torch.manual_seed(0)
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(SIZE), random_weights=True)
    return load_image(require_data("images", "truck.jpg")), model


def test_image_predictor_cleans_masks_on_a_real_photo(photo_and_model):
    photo, model = photo_and_model
    plain, cleaned = ImagePredictor(model), ImagePredictor(
        model, max_hole_area=HOLE, max_sprinkle_area=SPRINKLE)
    plain.set_image(photo)
    cleaned.set_image(photo)
    raw, raw_iou, raw_low = plain.predict(**CLICKS, return_logits=True)
    out, iou, low = cleaned.predict(**CLICKS, return_logits=True)
    assert np.array_equal(iou, raw_iou) and np.array_equal(low, raw_low)  # low-res not cleaned
    assert not np.array_equal(raw > 0, out > 0), "the cleaning areas changed no pixel"
    # Expected: the official recipe (clean the low-res logits, then upsample) with the oracle.
    t = torch.from_numpy(raw_low)[:, None]
    bg, fg = _oracle_areas(t <= 0), _oracle_areas(t > 0)
    t = torch.where((bg > 0) & (bg <= HOLE), 10.0, t)
    t = torch.where((fg > 0) & (fg <= SPRINKLE), -10.0, t)
    want = F.interpolate(t.transpose(0, 1), photo.shape[:2], mode="bilinear", align_corners=False)
    assert np.abs(out - want[0].numpy()).max() < 1e-4


def test_image_predictor_cleaning_matches_the_reference(photo_and_model, monkeypatch):
    """The official predictor skips cleaning on CPU; with the oracle standing in for its
    CUDA kernel it must agree with ours."""
    photo, _ = photo_and_model
    ref_model = build_reference("sam2.1_hiera_tiny", overrides=[f"++model.image_size={SIZE}"])
    import sam2.utils.misc
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    def components(mask):
        areas = _oracle_areas(mask.bool().cpu()).to(mask.device)
        return (areas > 0).int(), areas.int()

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", components)
    ref = SAM2ImagePredictor(ref_model, max_hole_area=HOLE, max_sprinkle_area=SPRINKLE)
    side = SIZE // 4
    # The official predictor hard-codes the 1024 px feature sizes.
    ref._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    ours = ImagePredictor(
        build_model(get_config("sam2.1_hiera_tiny").with_image_size(SIZE),
                    checkpoint=ref_model.state_dict()),
        max_hole_area=HOLE, max_sprinkle_area=SPRINKLE)
    with torch.inference_mode():
        ref.set_image(photo)
    ours.set_image(photo)
    for multimask in (True, False):
        got = ours.predict(**CLICKS, multimask_output=multimask)
        want = ref.predict(**CLICKS, multimask_output=multimask)
        assert np.mean(got[0] != want[0]) < 1e-4
        assert rel_err(got[1], want[1]) < 1e-3 and rel_err(got[2], want[2]) < 1e-3
