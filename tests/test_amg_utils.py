"""AMG utilities against the official sam2.utils.amg, and box NMS against a hand-written
reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require_reference

import masklet.amg.nms as nms_module
from masklet.amg import utils as amg
from masklet.amg.nms import batched_nms, box_area, nms


@pytest.fixture(scope="module")
def ref():
    require_reference()
    from sam2.utils import amg as ref_amg

    return ref_amg


def _random_masks(gen: torch.Generator, *shape: int, p: float = 0.3) -> torch.Tensor:
    return torch.rand(*shape, generator=gen) < p


def _blobby_masks(gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """Masks with long runs, one empty and one full, and some that start with a 1."""
    low = torch.rand(b, 1, h // 4, w // 4, generator=gen)
    masks = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear")[:, 0] > 0.5
    masks[0] = False
    masks[1] = True
    masks[2, 0, 0] = True
    return masks


# ---------------------------------------------------------------- point grids and crops


@pytest.mark.parametrize("n", [1, 2, 7, 32, 64])
def test_build_point_grid(ref, n):
    ours = amg.build_point_grid(n)
    assert ours.shape == (n * n, 2)
    np.testing.assert_array_equal(ours, ref.build_point_grid(n))


@pytest.mark.parametrize(
    "n_per_side,n_layers,scale", [(32, 0, 1), (32, 2, 2), (16, 3, 2), (30, 2, 3)]
)
def test_build_all_layer_point_grids(ref, n_per_side, n_layers, scale):
    ours = amg.build_all_layer_point_grids(n_per_side, n_layers, scale)
    theirs = ref.build_all_layer_point_grids(n_per_side, n_layers, scale)
    assert len(ours) == len(theirs) == n_layers + 1
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("im_size", [(1200, 1800), (540, 960), (333, 517), (1024, 1024)])
@pytest.mark.parametrize(
    "n_layers,overlap", [(0, 512 / 1500), (1, 512 / 1500), (3, 0.25), (2, 0.0)]
)
def test_generate_crop_boxes(ref, im_size, n_layers, overlap):
    ours = amg.generate_crop_boxes(im_size, n_layers, overlap)
    assert ours == ref.generate_crop_boxes(im_size, n_layers, overlap)
    assert len(ours[0]) == 1 + sum(4**i for i in range(1, n_layers + 1))


# ---------------------------------------------------------------- uncropping and boxes


def test_uncrop(ref):
    gen = torch.Generator().manual_seed(0)
    crop = [37, 11, 237, 161]
    boxes_int = torch.randint(0, 150, (9, 4), generator=gen)
    boxes_float = torch.rand(2, 9, 4, generator=gen) * 150
    points = torch.rand(3, 5, 2, generator=gen) * 150
    for boxes in (boxes_int, boxes_float):
        ours, theirs = amg.uncrop_boxes_xyxy(boxes, crop), ref.uncrop_boxes_xyxy(boxes, crop)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert torch.equal(amg.uncrop_points(points, crop), ref.uncrop_points(points, crop))
    assert torch.equal(amg.uncrop_points(points[0], crop), ref.uncrop_points(points[0], crop))
    masks = _random_masks(gen, 4, 150, 200)
    assert torch.equal(
        amg.uncrop_masks(masks, crop, 300, 400), ref.uncrop_masks(masks, crop, 300, 400)
    )
    assert amg.uncrop_masks(masks, [0, 0, 200, 150], 150, 200) is masks


def test_is_box_near_crop_edge(ref):
    gen = torch.Generator().manual_seed(1)
    crop, orig = [100, 50, 400, 300], [0, 0, 400, 600]
    boxes = torch.randint(0, 300, (200, 4), generator=gen).float()
    boxes[:, 2:] += boxes[:, :2]
    boxes[:5] = torch.tensor(
        [[0.0, 0, 10, 10], [290, 0, 300, 10], [5, 5, 30, 30], [0, 240, 50, 250], [50, 50, 60, 60]]
    )
    ours = amg.is_box_near_crop_edge(boxes, crop, orig)
    theirs = ref.is_box_near_crop_edge(boxes, crop, orig)
    assert torch.equal(ours, theirs)
    assert ours.any() and not ours.all()


def test_batched_mask_to_box(ref):
    gen = torch.Generator().manual_seed(2)
    masks = _blobby_masks(gen, 6, 40, 56)
    masks[3] = False
    masks[3, 7, 9] = True  # single pixel
    for shaped in (masks, masks.reshape(2, 3, 40, 56), masks[4]):
        ours, theirs = amg.batched_mask_to_box(shaped), ref.batched_mask_to_box(shaped)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert amg.batched_mask_to_box(masks)[3].tolist() == [9, 7, 9, 7]
    assert amg.batched_mask_to_box(masks)[0].tolist() == [0, 0, 0, 0]
    empty = torch.zeros(0, 3, 40, 56, dtype=torch.bool)
    ours, theirs = amg.batched_mask_to_box(empty), ref.batched_mask_to_box(empty)
    assert ours.shape == theirs.shape == (0, 3, 4) and ours.dtype == theirs.dtype


def test_box_xyxy_to_xywh(ref):
    box = torch.tensor([3.0, 4.0, 10.0, 20.0])
    ours = amg.box_xyxy_to_xywh(box)
    assert torch.equal(ours, ref.box_xyxy_to_xywh(box)) and ours.tolist() == [3, 4, 7, 16]
    assert box.tolist() == [3, 4, 10, 20]  # input untouched
    arr = box.numpy().copy()
    np.testing.assert_array_equal(amg.box_xyxy_to_xywh(arr), ref.box_xyxy_to_xywh(arr))
    batch = torch.tensor([[0, 0, 5, 5], [1, 2, 3, 9]])
    assert amg.box_xyxy_to_xywh(batch).tolist() == [[0, 0, 5, 5], [1, 2, 2, 7]]


# ---------------------------------------------------------------- scores and RLE


def test_stability_score(ref):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, 64, 48, generator=gen) * 4
    logits[0, 0] = -10.0  # empty at both thresholds: 0/0 = NaN in both
    logits[0, 1, :8] = 1.0  # exactly on the upper threshold: not counted (strict >)
    for threshold, offset in [(0.0, 1.0), (0.5, 0.25), (-1.0, 2.0)]:
        ours = amg.calculate_stability_score(logits, threshold, offset)
        theirs = ref.calculate_stability_score(logits, threshold, offset)
        assert ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(amg.calculate_stability_score(logits, 0.0, 1.0)[0, 0])


def test_mask_to_rle_and_back(ref):
    gen = torch.Generator().manual_seed(4)
    for masks in (
        _blobby_masks(gen, 7, 33, 45),
        _random_masks(gen, 3, 20, 17),
        torch.ones(1, 1, 1, dtype=torch.bool),
    ):
        ours = amg.mask_to_rle_pytorch(masks)
        theirs = ref.mask_to_rle_pytorch(masks)
        assert ours == theirs
        for rle, mask in zip(ours, masks.numpy()):
            decoded = amg.rle_to_mask(rle)
            np.testing.assert_array_equal(decoded, mask)
            np.testing.assert_array_equal(decoded, ref.rle_to_mask(rle))
            assert amg.area_from_rle(rle) == ref.area_from_rle(rle) == int(mask.sum())
            assert amg.coco_encode_rle(rle) == ref.coco_encode_rle(rle)
    assert amg.mask_to_rle_pytorch(torch.zeros(0, 4, 4, dtype=torch.bool)) == []


# ---------------------------------------------------------------- small regions


def _cv2_or_none():
    try:
        import cv2  # noqa: F401
    except ImportError:
        return None
    return cv2


def test_remove_small_regions_against_reference(ref):
    if _cv2_or_none() is None:
        pytest.skip("the reference remove_small_regions needs OpenCV (cv2), not installed")
    gen = torch.Generator().manual_seed(5)
    for mask in _random_masks(gen, 12, 40, 50, p=0.5).numpy():
        for mode in ("holes", "islands"):
            for thresh in (1, 3, 10, 5000):
                ours, changed = amg.remove_small_regions(mask, thresh, mode)
                theirs, ref_changed = ref.remove_small_regions(mask, thresh, mode)
                assert changed == ref_changed
                np.testing.assert_array_equal(ours, theirs)


def _mask_from(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


def test_remove_small_regions_hand_cases():
    mask = _mask_from([
        "#####.....",
        "#.###.....",
        "#####...#.",
        "......#...",
        "......###.",
    ])
    # Holes: the single-pixel hole is filled; the 8-connected background is large.
    filled, changed = amg.remove_small_regions(mask, 2, "holes")
    assert changed
    expected = mask.copy()
    expected[1, 1] = True
    np.testing.assert_array_equal(filled, expected)
    # Islands: the lone pixel (2, 8) goes; (3, 6) joins (4, 6..8) as one 4-pixel region.
    cleaned, changed = amg.remove_small_regions(mask, 2, "islands")
    assert changed
    expected = mask.copy()
    expected[2, 8] = False
    np.testing.assert_array_equal(cleaned, expected)
    # Nothing below the threshold: returned unchanged and flagged so.
    same, changed = amg.remove_small_regions(mask, 1, "islands")
    assert not changed and same is mask
    # All islands small: only the largest (the 14-pixel block) is kept.
    largest, changed = amg.remove_small_regions(mask, 100, "islands")
    expected = np.zeros_like(mask)
    expected[:3, :5] = mask[:3, :5]
    assert changed and expected.sum() == 14
    np.testing.assert_array_equal(largest, expected)
    # Ties for the largest go to the first region in raster order.
    twins = _mask_from(["##...##", "......."])
    kept, _ = amg.remove_small_regions(twins, 10, "islands")
    np.testing.assert_array_equal(kept, _mask_from(["##.....", "......."]))
    # Diagonal holes are one 8-connected region of size 2.
    diag = ~_mask_from(["....", ".#..", "..#.", "...."])
    assert amg.remove_small_regions(diag, 2, "holes")[1] is False
    assert amg.remove_small_regions(diag, 3, "holes")[0].all()
    with pytest.raises(ValueError):
        amg.remove_small_regions(mask, 2, "bogus")


# ---------------------------------------------------------------- MaskData and batching


def test_mask_data_matches_reference(ref):
    gen = torch.Generator().manual_seed(6)
    fields = lambda: dict(  # noqa: E731
        masks=torch.rand(6, 4, 4, generator=gen) > 0.5,
        iou=np.arange(6, dtype=np.float32),
        rles=[{"i": i} for i in range(6)],
        boxes=torch.arange(24).reshape(6, 4),
    )
    first, second = fields(), fields()
    ours, theirs = amg.MaskData(**first), ref.MaskData(**first)
    for data in (ours, theirs):
        data.filter(torch.tensor([True, False, True, True, False, True]))
        data.filter(torch.tensor([3, 0]))
        data.cat(amg.MaskData(**second) if data is ours else ref.MaskData(**second))
        data.to_numpy()
    assert set(ours.keys()) == {k for k, _ in theirs.items()}
    for key, value in theirs.items():
        mine = ours[key]
        if isinstance(value, np.ndarray):
            assert mine.dtype == value.dtype
            np.testing.assert_array_equal(mine, value)
        else:
            assert mine == value
    ours["extra"] = None  # None fields survive filtering and are replaced by cat
    ours.filter(torch.tensor([0, 1]))
    assert ours["extra"] is None
    ours.cat(amg.MaskData(extra=[1, 2]))
    assert ours["extra"] == [1, 2]
    with pytest.raises(TypeError):
        amg.MaskData(bad=3)


def test_mask_data_cat_into_empty_copies():
    source = amg.MaskData(x=torch.zeros(2))
    target = amg.MaskData()
    target.cat(source)
    target["x"][0] = 5
    assert source["x"][0] == 0


def test_batch_iterator(ref):
    a, b = list(range(10)), torch.arange(10)
    ours = list(amg.batch_iterator(4, a, b))
    theirs = list(ref.batch_iterator(4, a, b))
    assert len(ours) == len(theirs) == 3
    for (oa, ob), (ta, tb) in zip(ours, theirs):
        assert oa == ta and torch.equal(ob, tb)
    with pytest.raises(ValueError):
        list(amg.batch_iterator(2, [1, 2], [1]))


# ---------------------------------------------------------------- box NMS


def reference_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thr: float
) -> list[int]:
    """torchvision's CPU kernel written out: float32 IoU, compared to a double threshold."""
    b = boxes.numpy().astype(np.float32)
    s, c = scores.tolist(), idxs.tolist()
    order = sorted(range(len(s)), key=lambda i: -s[i])  # Python's sort is stable
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if j in suppressed or c[j] != c[i]:
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            if float(inter / (area[i] + area[j] - inter)) > thr:
                suppressed.add(j)
    return keep


def _random_boxes(gen: torch.Generator, n: int, integer: bool) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes.round() if integer else boxes


@pytest.mark.parametrize("block", [2048, 7])
@pytest.mark.parametrize("integer", [False, True])
def test_batched_nms_random(monkeypatch, block, integer):
    monkeypatch.setattr(nms_module, "_BLOCK", block)
    gen = torch.Generator().manual_seed(7 + integer)
    n = 300
    boxes = _random_boxes(gen, n, integer)
    # Coarse scores create ties, exercising the stable ordering.
    scores = (torch.rand(n, generator=gen) * 20).round() / 20
    idxs = torch.randint(0, 3, (n,), generator=gen)
    for thr in (0.0, 0.3, 0.5, 0.7, 1.0):
        expected = reference_batched_nms(boxes, scores, idxs, thr)
        got = batched_nms(boxes, scores, idxs, thr)
        assert got.dtype == torch.int64
        assert got.tolist() == expected
    assert 0 < len(expected) <= n


def test_nms_specific_cases():
    box = [10.0, 10.0, 50.0, 60.0]
    # Identical boxes: only the best survives; among equal scores the lowest index.
    boxes = torch.tensor([box, box, box])
    assert nms(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]
    assert nms(boxes, torch.tensor([0.7, 0.7, 0.7]), 0.5).tolist() == [0]
    # Disjoint boxes: nothing is suppressed, output ordered by decreasing score.
    disjoint = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]])
    assert nms(disjoint, torch.tensor([0.1, 0.3, 0.2]), 0.0).tolist() == [1, 2, 0]
    # Different categories never suppress each other.
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 1, 2]
    # Suppression needs IoU strictly above the threshold: IoU 1/2 at 0.5 survives.
    half = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1]])
    assert nms(half, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert nms(half, torch.tensor([1.0, 0.5]), 0.49).tolist() == [0]
    # IoU 3/10 is 0.30000001 in float32, above the double 0.3: torchvision suppresses.
    tenth = torch.tensor([[0.0, 0, 10, 1], [0, 0, 3, 1]])
    assert nms(tenth, torch.tensor([1.0, 0.5]), 0.3).tolist() == [0]
    assert reference_batched_nms(tenth, torch.tensor([1.0, 0.5]), torch.zeros(2), 0.3) == [0]
    # Empty input.
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0


def test_box_area():
    boxes = torch.tensor([[0.0, 0, 4, 3], [1, 1, 1, 5]])
    assert box_area(boxes).tolist() == [12.0, 0.0]
