"""ImagePredictor behaviour: accepted inputs, output shapes, batching, and clear errors.

The tiny preset at a 256 px input (64x64 low-res masks) runs every code path the
1024 px model does; parity with the official predictor is in test_image_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_data
from reference import rel_err

from masklet import ImagePredictor, build_model, get_config
from masklet.io.images import ImageReadError, load_image
from masklet.predictor.prompts import PromptError

SIZE = 256
LOW = SIZE // 4
TOL = 1e-4
CLICK = dict(point_coords=np.array([[900.0, 600.0]]), point_labels=np.array([1]))
BOXES = np.array([[450.0, 300.0, 1500.0, 1000.0], [100.0, 50.0, 700.0, 900.0],
                  [1200.0, 200.0, 1790.0, 1190.0]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("sam2.1_hiera_tiny").with_image_size(SIZE), random_weights=True)


@pytest.fixture(scope="module")
def truck() -> np.ndarray:
    return load_image(require_data("images", "truck.jpg"))


@pytest.fixture(scope="module")
def predictor(model, truck) -> ImagePredictor:
    """A predictor with the truck photo set; tests that change its image use their own."""
    p = ImagePredictor(model)
    p.set_image(truck)
    return p


def _wh(image: np.ndarray) -> np.ndarray:
    return np.array([image.shape[1], image.shape[0]], dtype=np.float64)


# ----------------------------------------------------------------- state
def test_predict_before_set_image(model):
    p = ImagePredictor(model)
    assert not p.is_image_set
    for call in (lambda: p.predict(**CLICK), p.get_image_embedding,
                 lambda: p.predict_batch([CLICK["point_coords"]], [CLICK["point_labels"]])):
        with pytest.raises(RuntimeError, match="set_image"):
            call()


def test_reset_predictor(model, truck):
    p = ImagePredictor(model)
    p.set_image(truck)
    assert p.is_image_set and p.original_size() == truck.shape[:2]
    assert p.get_image_embedding().shape == (1, 256, SIZE // 16, SIZE // 16)
    p.reset_predictor()
    assert not p.is_image_set
    with pytest.raises(RuntimeError):
        p.predict(**CLICK)


def test_single_and_batch_modes_are_not_mixed(model, truck, predictor):
    p = ImagePredictor(model)
    p.set_image_batch([truck])
    with pytest.raises(RuntimeError, match="predict_batch"):
        p.predict(**CLICK)
    with pytest.raises(RuntimeError, match="predict\\("):
        predictor.predict_batch([CLICK["point_coords"]], [CLICK["point_labels"]])
    with pytest.raises(ValueError, match="non-empty list"):
        ImagePredictor(model).set_image_batch([])


# ----------------------------------------------------------------- outputs
@pytest.mark.parametrize("multimask", [True, False])
def test_return_shapes_and_types(predictor, truck, multimask):
    c = 3 if multimask else 1
    masks, ious, low = predictor.predict(**CLICK, multimask_output=multimask)
    assert masks.shape == (c, *truck.shape[:2]) and ious.shape == (c,)
    assert low.shape == (c, LOW, LOW)
    assert masks.dtype == ious.dtype == low.dtype == np.float32
    assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    logits, _, _ = predictor.predict(**CLICK, multimask_output=multimask, return_logits=True)
    assert np.array_equal(logits > 0, masks > 0)
    assert np.abs(low).max() <= 32.0  # low-res logits are clamped, like the official


def test_no_prompt_at_all(predictor, truck):
    masks, ious, low = predictor.predict()
    assert masks.shape == (3, *truck.shape[:2]) and np.isfinite(low).all()


def test_mask_input_from_a_previous_call(predictor, truck):
    _, ious, low = predictor.predict(**CLICK)
    best = low[np.argmax(ious)][None]
    masks, _, low2 = predictor.predict(**CLICK, mask_input=best, multimask_output=False)
    assert masks.shape == (1, *truck.shape[:2])
    _, _, without = predictor.predict(**CLICK, multimask_output=False)
    assert not np.allclose(low2, without)  # the mask prompt is used


def test_normalized_coordinates_equal_pixels(predictor, truck):
    pixels = np.array([[900.0, 600.0], [300.0, 1000.0]])
    labels = np.array([1, 0])
    box = np.array([450.0, 300.0, 1500.0, 1000.0])
    wh = _wh(truck)
    a = predictor.predict(pixels, labels, box, return_logits=True)
    b = predictor.predict(pixels / wh, labels, box / np.tile(wh, 2), return_logits=True,
                          normalize_coords=False)
    for x, y in zip(a, b):
        assert rel_err(x, y) < TOL


def test_torch_prompts_equal_numpy(predictor):
    a = predictor.predict(**CLICK, box=BOXES[0])
    b = predictor.predict(torch.tensor(CLICK["point_coords"]), torch.tensor([1]),
                          torch.tensor(BOXES[0]))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_points_on_the_border_are_inside(predictor, truck):
    h, w = truck.shape[:2]
    predictor.predict(point_coords=[[0.0, 0.0], [w, h]], point_labels=[1, 0])
    predictor.predict(point_coords=[[1.0, 1.0]], point_labels=[1], normalize_coords=False)


# ----------------------------------------------------------------- several prompts at once
def test_boxes_at_once_equal_one_at_a_time(predictor, truck):
    masks, ious, low = predictor.predict(box=BOXES, return_logits=True)
    assert masks.shape == (3, 3, *truck.shape[:2]) and ious.shape == (3, 3)
    assert low.shape == (3, 3, LOW, LOW)
    for i, box in enumerate(BOXES):
        one = predictor.predict(box=box, return_logits=True)
        for batched, single in zip((masks, ious, low), one):
            assert rel_err(batched[i], single) < TOL


def test_click_batches_equal_one_at_a_time(predictor):
    coords = np.array([[[900.0, 600.0], [100.0, 100.0]], [[300.0, 700.0], [1500.0, 400.0]]])
    labels = np.array([[1, 0], [1, 1]])
    masks, ious, low = predictor.predict(coords, labels, multimask_output=False,
                                         return_logits=True)
    assert masks.shape[:2] == (2, 1) and low.shape == (2, 1, LOW, LOW)
    for i in range(2):
        one = predictor.predict(coords[i], labels[i], multimask_output=False, return_logits=True)
        for batched, single in zip((masks, ious, low), one):
            assert rel_err(batched[i], single) < TOL


def test_predict_batch_equals_predict(model, truck):
    groceries = load_image(require_data("images", "groceries.jpg"))
    images = [truck, groceries]
    coords = [np.array([[900.0, 600.0]]), np.array([[250.0, 200.0], [500.0, 300.0]])]
    labels = [np.array([1]), np.array([1, 0])]
    boxes = [None, np.array([100.0, 100.0, 600.0, 500.0])]
    batch = ImagePredictor(model)
    batch.set_image_batch(images)
    assert batch.get_image_embedding().shape[0] == 2
    got = batch.predict_batch(coords, labels, boxes, return_logits=True)
    single = ImagePredictor(model)
    for i, image in enumerate(images):
        single.set_image(image)
        assert batch.original_size(i) == image.shape[:2]
        want = single.predict(coords[i], labels[i], boxes[i], return_logits=True)
        for g, w in zip(got, want):
            assert rel_err(g[i], w) < TOL
    with pytest.raises(PromptError, match="2 images"):
        batch.predict_batch(coords[:1], labels[:1])


# ----------------------------------------------------------------- image inputs
def test_path_pil_and_numpy_give_identical_embeddings(model):
    path = require_data("images", "cars.jpg")
    with Image.open(path) as im:
        pil = im.copy()
    embeddings = []
    for image in (path, str(path), pil, np.asarray(pil.convert("RGB"))):
        p = ImagePredictor(model)
        p.set_image(image)
        assert p.original_size() == (pil.height, pil.width)
        embeddings.append(p.get_image_embedding())
    assert all(torch.equal(e, embeddings[0]) for e in embeddings[1:])


def test_grey_images_are_expanded_to_rgb(model, truck):
    grey = np.asarray(Image.fromarray(truck).convert("L"))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    embeddings = []
    for image in (grey, Image.fromarray(grey), rgb):
        p = ImagePredictor(model)
        p.set_image(image)
        embeddings.append(p.get_image_embedding())
    assert all(torch.equal(e, embeddings[-1]) for e in embeddings)


def test_missing_and_non_image_files(model, tmp_path):
    p = ImagePredictor(model)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match="not found") as info:
        p.set_image(missing)
    assert str(missing) in str(info.value)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot read image") as info:
        p.set_image(str(text))
    assert str(text) in str(info.value)
    assert not p.is_image_set


@pytest.mark.parametrize("image, match", [
    (np.zeros((8, 8, 4), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "unsupported image type"),
])
def test_bad_arrays(model, image, match):
    with pytest.raises(ImageReadError, match=match):
        ImagePredictor(model).set_image(image)


# ----------------------------------------------------------------- bad prompts
def _raises(predictor, match: str, **kwargs) -> str:
    with pytest.raises(PromptError, match=match) as info:
        predictor.predict(**kwargs)
    return str(info.value)


def test_point_outside_the_image(predictor, truck):
    h, w = truck.shape[:2]
    msg = _raises(predictor, "outside", point_coords=[[100.0, 100.0], [w + 5.0, 10.0]],
                  point_labels=[1, 1])
    assert f"[{w + 5.0}, 10.0]" in msg and f"{w}x{h}" in msg
    _raises(predictor, "outside", point_coords=[[-1.0, 10.0]], point_labels=[1])
    msg = _raises(predictor, "normalised", point_coords=[[1.5, 0.2]], point_labels=[1],
                  normalize_coords=False)
    assert "[1.5, 0.2]" in msg
    # Pixel coordinates given with normalize_coords=False are caught, not silently scaled.
    _raises(predictor, "outside", point_coords=[[900.0, 600.0]], point_labels=[1],
            normalize_coords=False)
    _raises(predictor, "box corner", box=[10.0, 10.0, w + 100.0, 50.0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(point_coords=[[1.0, 2.0], [3.0, 4.0]], point_labels=[1]), "does not match"),
    (dict(point_coords=[[1.0, 2.0]], point_labels=[[1]]), "does not match"),
    (dict(point_coords=[[1.0, 2.0, 3.0]], point_labels=[1]), r"\[N, 2\]"),
    (dict(point_coords=[[1.0, 2.0]]), "together"),
    (dict(point_labels=[1]), "together"),
    (dict(point_coords=[[1.0, 2.0], [5.0, 5.0]], point_labels=[1, 5]), r"label\(s\) \[5\]"),
    (dict(point_coords=[[np.nan, 2.0]], point_labels=[1]), "NaN"),
    (dict(point_coords=[[np.inf, 2.0]], point_labels=[1]), "NaN or infinite"),
    (dict(box=[500.0, 10.0, 100.0, 50.0]), "x0 <= x1"),
    (dict(box=[10.0, 500.0, 100.0, 50.0]), "y0 <= y1"),
    (dict(box=[10.0, 10.0, 100.0]), "shape"),
    (dict(box=[10.0, np.nan, 100.0, 200.0]), "NaN"),
    (dict(mask_input=np.zeros((1, 256, 256), np.float32)), rf"\[1, {LOW}, {LOW}\]"),
    (dict(mask_input=np.zeros((2, LOW, LOW), np.float32)), "mask_input"),
    (dict(mask_input=np.zeros((LOW, LOW), np.float32)), "mask_input"),
], ids=["n_mismatch", "rank_mismatch", "three_coords", "coords_only", "labels_only",
        "unknown_label", "nan_point", "inf_point", "box_x", "box_y", "box_shape", "nan_box",
        "mask_1024_size", "mask_two_channels", "mask_2d"])
def test_bad_prompts(predictor, kwargs, match):
    _raises(predictor, match, **kwargs)
