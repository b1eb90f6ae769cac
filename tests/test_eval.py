"""J&F evaluation: hand-made cases with known values, DAVIS ground truth vs perturbed copies."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import require_data

from masklet.data.png import load_id_mask
from masklet.eval import (
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    format_table,
    region_similarity,
    run_eval,
    sequence_statistics,
)
from masklet.export import write_palette_png


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def toolkit_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """Plain transcription of the protocol: full-frame boundaries, explicit disk dilation."""
    radius = math.ceil(bound_th * math.hypot(*gt.shape))
    offsets = np.arange(-radius, radius + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = gt_b.sum(), pred_b.sum()
    if n_gt == 0 or n_pred == 0:
        return float(n_gt == n_pred)
    precision = (pred_b & ndimage.binary_dilation(gt_b, disk)).sum() / n_pred
    recall = (gt_b & ndimage.binary_dilation(pred_b, disk)).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- per-frame metrics


def test_identical_masks_score_one():
    mask = square(100, 20, 30, 40)
    assert region_similarity(mask, mask) == 1.0
    assert boundary_f_measure(mask, mask) == 1.0


def test_disjoint_masks_score_zero():
    a, b = square(200, 10, 10, 30), square(200, 120, 120, 30)
    assert region_similarity(a, b) == 0.0
    assert boundary_f_measure(a, b) == 0.0


def test_empty_masks_protocol_cases():
    empty = np.zeros((50, 60), dtype=bool)
    full = square(60, 5, 5, 20)[:50]
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    assert region_similarity(full, empty) == 0.0 and region_similarity(empty, full) == 0.0
    assert boundary_f_measure(full, empty) == 0.0 and boundary_f_measure(empty, full) == 0.0


def test_boundary_map_hand_case():
    mask = np.zeros((6, 6), dtype=bool)
    mask[2:4, 2:5] = True  # rows 2-3, cols 2-4
    expected = np.zeros((6, 6), dtype=bool)
    # The boundary is the ring of the box grown one pixel up/left: rows 1..3, cols 1..4.
    expected[1, 1:5] = expected[3, 1:5] = True
    expected[1:4, 1] = expected[1:4, 4] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_map_image_border_is_not_an_edge():
    mask = np.zeros((5, 5), dtype=bool)
    mask[2:, 2:] = True  # touches the bottom and right borders
    bmap = boundary_map(mask)
    # The last row and column only mark the step into the object, not the border itself.
    assert bmap[-1].tolist() == [False, True, False, False, False]
    assert bmap[:, -1].tolist() == [False, True, False, False, False]


def test_boundary_tolerance_davis_480p():
    assert boundary_tolerance(480, 854) == math.ceil(0.008 * math.hypot(480, 854)) == 8
    assert boundary_tolerance(480, 854, bound_th=3) == 3


def test_shifted_square_known_values():
    size, side, shift = 500, 60, 20
    radius = boundary_tolerance(size, size)
    assert radius == 6
    a = square(size, 200, 200, side)
    b = square(size, 200, 200 + shift, side)
    assert region_similarity(a, b) == pytest.approx((side - shift) / (side + shift))
    # Hand count (4*side boundary pixels each): top and bottom rows match on
    # side + 1 - shift + radius pixels, the far column within `radius` of a corner row
    # on 2 * radius pixels, the near column not at all; precision == recall by symmetry.
    matched = 2 * (side + 1 - shift + radius) + 2 * radius
    assert boundary_f_measure(a, b) == pytest.approx(matched / (4 * side))
    # A shift within the tolerance keeps every boundary pixel matched.
    c = square(size, 200, 200 + radius, side)
    assert boundary_f_measure(a, c) == 1.0
    assert region_similarity(a, c) == pytest.approx((side - radius) / (side + radius))


def test_f_measure_matches_explicit_disk_dilation():
    rng = np.random.default_rng(0)
    for trial in range(12):
        height, width = rng.integers(40, 160, size=2)
        gt = ndimage.gaussian_filter(rng.normal(size=(height, width)), 4) > 0.02
        pred = ndimage.gaussian_filter(rng.normal(size=(height, width)), 3) > 0.0
        if trial % 3 == 0:
            pred = ndimage.shift(gt, (3, -2), order=0)  # close masks: partial matching
        bound_th = 0.008 if trial % 2 else 0.05
        assert boundary_f_measure(gt, pred, bound_th) == pytest.approx(
            toolkit_f_measure(gt, pred, bound_th)
        )


def test_metric_input_validation():
    with pytest.raises(ValueError):
        region_similarity(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(TypeError):
        boundary_f_measure(np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool))


def test_sequence_statistics_recall_and_decay():
    stats = sequence_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=float))
    # Bin edges round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]: first bin frames
    # 0..2, last bin frames 5..7.
    assert (stats.mean, stats.recall, stats.decay) == (0.5, 0.5, 1.0)
    constant = sequence_statistics(np.full(5, 0.4))
    assert (constant.recall, constant.decay) == (0.0, 0.0)
    # 300 frames: the toolkit's uint8 bin edges would wrap; ours must not.
    ramp = sequence_statistics(np.linspace(1.0, 0.0, 300))
    assert ramp.decay == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ValueError):
        sequence_statistics(np.array([]))


# ---------------------------------------------------------------- folder evaluation


def write_sequence(root, name, masks):
    for t, ids in enumerate(masks):
        write_palette_png(root / name / f"{t:05d}.png", ids)


@pytest.fixture(scope="module")
def davis_subset(tmp_path_factory):
    """Ground truth: 6 frames of two DAVIS 2016 sequences, kept in their 0/255 PNG form."""
    source = require_data("davis2016-train", "Annotations", "480p")
    root = tmp_path_factory.mktemp("davis") / "Annotations" / "480p"
    for name in ("cows", "goat"):
        (root / name).mkdir(parents=True)
        for path in sorted((source / name).glob("*.png"))[:30:5]:
            shutil.copy(path, root / name / path.name)
    return root.parent.parent


def write_predictions(gt_root, pred_root, perturb):
    """Palette PNGs written directly with PIL: the atomic writer's fsyncs would dominate."""
    for seq in sorted((gt_root / "Annotations" / "480p").iterdir()):
        (pred_root / seq.name).mkdir(parents=True)
        for path in sorted(seq.glob("*.png")):
            image = Image.fromarray(perturb(load_id_mask(path)).astype(np.uint8), mode="P")
            image.putpalette([0, 0, 0, 128, 0, 0] + [255] * (254 * 3))
            image.save(pred_root / seq.name / path.name)


def test_davis_identity_and_monotonic_perturbations(davis_subset, tmp_path):
    def eroded(iterations):
        return lambda ids: ndimage.binary_erosion(ids > 0, iterations=iterations).astype(np.uint8)

    def shifted(pixels):
        def shift(ids):
            out = np.zeros_like(ids)
            out[:, pixels:] = ids[:, :-pixels]
            return out

        return shift

    scores = {}
    for name, perturb in [
        ("same", lambda ids: ids),
        ("erode2", eroded(2)),
        ("erode10", eroded(10)),
        ("erode20", eroded(20)),
        ("shift4", shifted(4)),
        ("shift12", shifted(12)),
        ("shift30", shifted(30)),
    ]:
        write_predictions(davis_subset, tmp_path / name, perturb)
        scores[name] = run_eval(tmp_path / name, davis_subset)
    same = scores["same"]
    assert same.jf == 1.0 and same.j.mean == 1.0 and same.f.mean == 1.0
    assert len(same.objects) == 2 and all(len(o.frame_names) == 4 for o in same.objects)
    for chain in (
        ("same", "erode2", "erode10", "erode20"),
        ("same", "shift4", "shift12", "shift30"),
    ):
        for step, (better, worse) in enumerate(zip(chain, chain[1:])):
            assert scores[worse].j.mean < scores[better].j.mean
            # F only drops once the boundary moves past the 8-pixel tolerance (steps 1, 2).
            if step == 0:
                assert scores[worse].f.mean <= scores[better].f.mean
            else:
                assert scores[worse].f.mean < scores[better].f.mean
    # A 4-pixel shift stays inside the 8-pixel boundary tolerance at 480p.
    assert scores["shift4"].f.mean > 0.97 > scores["shift4"].j.mean


def test_missing_frames_are_empty_and_reported(davis_subset, tmp_path):
    write_predictions(davis_subset, tmp_path, lambda ids: ids)
    removed = sorted((tmp_path / "cows").glob("*.png"))[4]
    removed.unlink()
    shutil.rmtree(tmp_path / "goat")
    result = run_eval(tmp_path, davis_subset)
    assert result.missing_frames["cows"] == (removed.stem,)
    assert result.missing_sequences == ("goat",)
    assert len(result.missing_frames["goat"]) == 4
    cows = next(o for o in result.objects if o.sequence == "cows")
    frame_scores = dict(zip(cows.frame_names, cows.j_frames))
    assert frame_scores[removed.stem] == 0.0
    assert cows.j.mean == pytest.approx(3 / 4)
    table = format_table(result)
    assert "Global" in table and "cows" in table and "missing" in table


def test_csv_written_atomically_and_reread(davis_subset, tmp_path):
    write_predictions(davis_subset, tmp_path / "pred", lambda ids: np.roll(ids, 10, axis=0))
    csv_path = tmp_path / "out" / "results.csv"
    result = run_eval(tmp_path / "pred", davis_subset, csv_path)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sequence"] for r in rows] == ["Global", "cows", "goat"]
    assert float(rows[0]["J&F-Mean"]) == pytest.approx(result.jf, abs=1e-6)
    assert float(rows[1]["F-Mean"]) == pytest.approx(result.objects[0].f.mean, abs=1e-6)
    assert float(rows[2]["J-Decay"]) == pytest.approx(result.objects[1].j.decay, abs=1e-6)
    assert rows[1]["frames"] == "4" and rows[0]["frames"] == "8"
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["results.csv"]


def test_all_frames_option_and_sequence_filter(davis_subset, tmp_path):
    write_predictions(davis_subset, tmp_path, lambda ids: ids)
    result = run_eval(tmp_path, davis_subset, skip_first_and_last=False, sequences=["goat"])
    assert [(o.sequence, len(o.frame_names)) for o in result.objects] == [("goat", 6)]
    with pytest.raises(ValueError, match="nope"):
        run_eval(tmp_path, davis_subset, sequences=["nope"])


def test_multi_object_palette_ground_truth(tmp_path):
    gt = np.zeros((5, 64, 80), dtype=np.uint8)
    gt[:, 10:30, 10:30] = 1
    gt[:, 35:60, 40:75] = 2
    gt[:, 0:4, 0:4] = 255  # void: background for the protocol, not an object
    write_sequence(tmp_path / "gt", "seq", gt)
    pred = gt.copy()
    pred[pred == 255] = 0
    pred[:, 35:60, 40:75] = 0  # object 2 lost
    write_sequence(tmp_path / "pred", "seq", pred)
    result = run_eval(tmp_path / "pred", tmp_path / "gt")
    assert [o.object_id for o in result.objects] == [1, 2]
    assert (result.objects[0].jf, result.objects[1].jf) == (1.0, 0.0)
    assert result.jf == 0.5 and result.sequences()[0].jf == 0.5


def test_per_object_layout(tmp_path):
    """SA-V val/test layout: <seq>/<obj>/<frame>.png, one binary mask per object."""
    for root, dx in (("gt", 0), ("pred", 3)):
        for obj, left in (("000", 5), ("001", 30)):
            for t in range(4):
                mask = square(64, 10 + t, left + (dx if obj == "001" else 0), 20).astype(np.uint8)
                write_palette_png(tmp_path / root / "vid" / obj / f"{4 * t:05d}.png", mask)
    result = run_eval(tmp_path / "pred", tmp_path / "gt")
    assert [(o.object_id, o.frame_names) for o in result.objects] == [
        (0, ("00004", "00008")),
        (1, ("00004", "00008")),
    ]
    assert result.objects[0].jf == 1.0
    assert result.objects[1].j.mean == pytest.approx(17 / 23)


def test_bad_inputs_raise_clear_errors(tmp_path):
    gt = np.zeros((4, 32, 32), dtype=np.uint8)
    gt[:, 8:20, 8:20] = 1
    write_sequence(tmp_path / "gt", "seq", gt)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_eval(tmp_path / "nowhere", tmp_path / "gt")
    with pytest.raises(FileNotFoundError, match="nogt"):
        run_eval(tmp_path / "gt", tmp_path / "nogt")
    write_sequence(tmp_path / "small", "seq", gt[:, :16])
    with pytest.raises(ValueError, match="00001.png"):
        run_eval(tmp_path / "small", tmp_path / "gt")
    (tmp_path / "broken" / "seq").mkdir(parents=True)
    (tmp_path / "broken" / "seq" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00001.png"):
        run_eval(tmp_path / "broken", tmp_path / "gt")
    write_sequence(tmp_path / "short", "seq", gt[:2])
    with pytest.raises(ValueError, match="at least 3"):
        run_eval(tmp_path / "gt", tmp_path / "short")
    write_sequence(tmp_path / "blank", "seq", np.zeros_like(gt))
    with pytest.raises(ValueError, match="no objects"):
        run_eval(tmp_path / "gt", tmp_path / "blank")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no sequence folders"):
        run_eval(tmp_path / "gt", tmp_path / "empty")
