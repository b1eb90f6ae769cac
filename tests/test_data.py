"""Dataset readers: id-mask PNGs, DAVIS / YouTube-VOS folders, SA-V and SA-1B JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import require_data

from masklet.amg.rle import encode_coco_rle
from masklet.data import VOSDataset, decode_rle, iter_sa1b_folder, load_id_mask, load_sa1b, load_sav
from masklet.data.rle import rle_area
from masklet.export import write_palette_png


def random_masks(rng, count, height, width):
    yy, xx = np.mgrid[0:height, 0:width]
    masks = np.zeros((count, height, width), dtype=bool)
    for i in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        masks[i] = (yy - cy) ** 2 / rng.uniform(20, 200) + (xx - cx) ** 2 / rng.uniform(20, 200) < 1
    return masks


# ---------------------------------------------------------------- PNG id masks


def test_id_mask_png_modes(tmp_path):
    ids = np.zeros((6, 7), dtype=np.uint8)
    ids[1:3, 1:4], ids[4:, 5:] = 1, 3
    write_palette_png(tmp_path / "p.png", ids)
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_id_mask(tmp_path / "p.png"), ids)

    Image.fromarray((ids > 0).astype(np.uint8) * 255, mode="L").save(tmp_path / "binary.png")
    np.testing.assert_array_equal(load_id_mask(tmp_path / "binary.png"), (ids > 0).astype(np.int32))
    Image.fromarray(ids, mode="L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_id_mask(tmp_path / "gray.png"), ids)
    Image.fromarray(ids > 0).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(load_id_mask(tmp_path / "bits.png"), (ids > 0).astype(np.int32))
    # A binary mask saved as gray RGB reads like the 0/255 grayscale one.
    Image.fromarray(np.repeat((ids[..., None] > 0).astype(np.uint8) * 255, 3, axis=2)).save(
        tmp_path / "rgb.png"
    )
    np.testing.assert_array_equal(load_id_mask(tmp_path / "rgb.png"), (ids > 0).astype(np.int32))

    color = np.zeros((6, 7, 3), dtype=np.uint8)
    color[0, 0] = (200, 10, 10)
    Image.fromarray(color).save(tmp_path / "color.png")
    with pytest.raises(ValueError, match="color.png"):
        load_id_mask(tmp_path / "color.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="junk.png"):
        load_id_mask(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_id_mask(tmp_path / "absent.png")


# ---------------------------------------------------------------- DAVIS / YouTube-VOS folders


def test_davis_folder_reader():
    root = require_data("davis2016-train")
    dataset = VOSDataset(root)
    assert dataset.image_root.name == "480p" and len(dataset) == 10
    seq = dataset["cows"]
    assert seq.size == (480, 854)
    assert len(seq.image_paths) == len(seq.mask_paths) == 104
    assert seq.annotated_frame_indices[:3] == (0, 1, 2)
    mask = seq.load_mask(0)
    assert mask.dtype == np.int32 and set(np.unique(mask).tolist()) == {0, 1}
    image = seq.load_image(0)
    assert image.shape == (480, 854, 3) and image.dtype == np.uint8
    assert dataset[0].name == "bmx-trees"
    with pytest.raises(KeyError):
        dataset["missing"]


def make_vos(root, size=(24, 32), frames=10, annotated=(0, 5)):
    for t in range(frames):
        path = root / "JPEGImages" / "seqA" / f"{t:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 10 * t, dtype=np.uint8)).save(path)
    for t in annotated:
        ids = np.zeros(size, dtype=np.uint8)
        ids[2:8, 3:9] = 1
        ids[10:20, 12:30] = 2 + t // 5  # object 3 appears later
        write_palette_png(root / "Annotations" / "seqA" / f"{t:05d}.png", ids)


def test_youtube_vos_style_sparse_annotations(tmp_path):
    make_vos(tmp_path)
    dataset = VOSDataset(tmp_path)
    seq = dataset["seqA"]
    assert dataset.image_root == tmp_path / "JPEGImages"
    assert seq.annotated_names == ("00000", "00005")
    assert seq.annotated_frame_indices == (0, 5)
    assert seq.object_ids() == (1, 2, 3)
    assert seq.load_images().shape == (10, 24, 32, 3)
    assert seq.load_masks().shape == (2, 24, 32)


def test_folder_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing"):
        VOSDataset(tmp_path / "nothing")
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match="Annotations"):
        VOSDataset(tmp_path)
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(ValueError, match="no sequence folders"):
        VOSDataset(tmp_path)
    (tmp_path / "JPEGImages" / "seqA").mkdir()
    with pytest.raises(ValueError, match="no frame images"):
        VOSDataset(tmp_path)

    make_vos(tmp_path)
    write_palette_png(tmp_path / "Annotations" / "seqA" / "00003.png", np.zeros((20, 32), np.uint8))
    seq = VOSDataset(tmp_path)["seqA"]
    with pytest.raises(ValueError, match="00003.png"):
        seq.load_masks()
    write_palette_png(tmp_path / "Annotations" / "seqA" / "00003.png", np.zeros((24, 32), np.uint8))
    write_palette_png(tmp_path / "Annotations" / "seqA" / "00099.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(ValueError, match="00099.png"):
        _ = VOSDataset(tmp_path)["seqA"].annotated_frame_indices
    (tmp_path / "Annotations" / "seqA" / "00099.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="00099.png"):
        VOSDataset(tmp_path)["seqA"].object_ids()


def test_resolution_levels(tmp_path):
    make_vos(tmp_path / "flat")
    for top in ("JPEGImages", "Annotations"):
        for level in ("1080p", "Full-Resolution"):
            shutil.copytree(tmp_path / "flat" / top, tmp_path / "levels" / top / level)
    with pytest.raises(ValueError, match="resolution"):
        VOSDataset(tmp_path / "levels")
    dataset = VOSDataset(tmp_path / "levels", resolution="1080p")
    assert dataset.image_root.name == "1080p"
    assert dataset["seqA"].annotated_frame_indices == (0, 5)
    with pytest.raises(FileNotFoundError, match="720p"):
        VOSDataset(tmp_path / "levels", resolution="720p")


# ---------------------------------------------------------------- SA-V JSON


def write_sav(path, masks, **overrides):
    """masks: [K, N, H, W] bool -> an SA-V style JSON file."""
    num_frames, num_objects, height, width = masks.shape
    data = {
        "video_id": "sav_000042",
        "video_duration": num_frames * 4 / 24,
        "video_frame_count": float(num_frames * 4),
        "video_height": float(height),
        "video_width": float(width),
        "masklet": [
            [encode_coco_rle(masks[k, i]) for i in range(num_objects)] for k in range(num_frames)
        ],
        "masklet_id": list(range(num_objects)),
        "masklet_first_appeared_frame": [0] * num_objects,
        "masklet_num": num_objects,
    }
    data.update(overrides)
    path.write_text(json.dumps(data))


def test_sav_json_reader(tmp_path):
    rng = np.random.default_rng(1)
    masks = random_masks(rng, 12, 30, 40).reshape(4, 3, 30, 40)
    masks[2, 1] = False  # object 1 hidden on annotated frame 2
    write_sav(tmp_path / "sav_000042_manual.json", masks)
    sav = load_sav(tmp_path / "sav_000042_manual.json")
    assert (sav.video_id, sav.height, sav.width, sav.num_video_frames) == ("sav_000042", 30, 40, 16)
    assert sav.masklet_ids == (0, 1, 2) and sav.num_annotated_frames == 4
    assert sav.video_frame_indices == (0, 4, 8, 12)
    np.testing.assert_array_equal(sav.decode_frame(2), masks[2])
    np.testing.assert_array_equal(sav.decode_object(1), masks[:, 1])
    np.testing.assert_array_equal(sav.visibility(), masks.any(axis=(2, 3)))
    np.testing.assert_array_equal(sav.areas(), masks.sum(axis=(2, 3)))


def test_sav_json_errors(tmp_path):
    masks = np.zeros((2, 2, 8, 9), dtype=bool)
    path = tmp_path / "v.json"
    with pytest.raises(FileNotFoundError, match="v.json"):
        load_sav(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="v.json"):
        load_sav(path)
    write_sav(path, masks, masklet_id=[0, 1, 2])
    with pytest.raises(ValueError, match="expected 3"):
        load_sav(path)
    write_sav(path, masks, video_height=9.0)
    with pytest.raises(ValueError, match="RLE size"):
        load_sav(path)
    path.write_text(json.dumps({"video_height": 8, "video_width": 9}))
    with pytest.raises(ValueError, match="missing keys"):
        load_sav(path)


# ---------------------------------------------------------------- SA-1B JSON


def write_sa1b(folder, name, masks, image_size=None):
    height, width = masks.shape[1:]
    image = np.random.default_rng(0).integers(
        0, 255, size=(*(image_size or (height, width)), 3), dtype=np.uint8
    )
    Image.fromarray(image).save(folder / f"{name}.jpg")
    annotations = []
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        annotations.append(
            {
                "id": 100 + i,
                "segmentation": encode_coco_rle(mask),
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                "predicted_iou": 0.9,
                "stability_score": 0.95,
                "point_coords": [[float(xs.mean()), float(ys.mean())]],
                "crop_box": [0, 0, width, height],
            }
        )
    info = {"image_id": 7, "width": width, "height": height, "file_name": f"{name}.jpg"}
    (folder / f"{name}.json").write_text(json.dumps({"image": info, "annotations": annotations}))


def test_sa1b_reader(tmp_path):
    masks = random_masks(np.random.default_rng(2), 5, 36, 48)
    masks[:, 18, 24] = True  # no empty mask (bbox needs a pixel)
    write_sa1b(tmp_path, "sa_1", masks)
    sample = load_sa1b(tmp_path / "sa_1.json")
    assert (sample.image_id, sample.height, sample.width, len(sample.annotations)) == (7, 36, 48, 5)
    ann = sample.annotations[3]
    assert ann.id == 103 and ann.area == masks[3].sum() and ann.predicted_iou == 0.9
    np.testing.assert_array_equal(sample.decode_masks(), masks)
    np.testing.assert_array_equal(sample.decode_masks([4, 1]), masks[[4, 1]])
    assert sample.load_image().shape == (36, 48, 3)
    write_sa1b(tmp_path, "sa_2", masks[:2])
    assert [s.file_name for s in iter_sa1b_folder(tmp_path)] == ["sa_1.jpg", "sa_2.jpg"]


def test_sa1b_errors(tmp_path):
    masks = np.ones((1, 10, 12), dtype=bool)
    write_sa1b(tmp_path, "sa_3", masks, image_size=(11, 12))
    with pytest.raises(ValueError, match="sa_3"):
        load_sa1b(tmp_path / "sa_3.json").load_image()
    data = json.loads((tmp_path / "sa_3.json").read_text())
    data["annotations"][0]["segmentation"]["size"] = [5, 5]
    (tmp_path / "sa_3.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sa_3.json"):
        load_sa1b(tmp_path / "sa_3.json")
    (tmp_path / "sa_4.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="sa_4.json"):
        load_sa1b(tmp_path / "sa_4.json")
    with pytest.raises(FileNotFoundError):
        load_sa1b(tmp_path / "sa_5.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no SA-1B"):
        list(iter_sa1b_folder(tmp_path / "empty"))


def test_rle_helpers_accept_all_count_forms():
    mask = random_masks(np.random.default_rng(3), 1, 20, 25)[0]
    rle = encode_coco_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [20, 25]
    np.testing.assert_array_equal(decode_rle(rle, (20, 25)), mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(decode_rle(as_bytes, (20, 25)), mask)
    # Uncompressed counts: alternating background / foreground run lengths over the
    # column-major pixel order, starting with background.
    runs, value, length = [], False, 0
    for pixel in mask.T.reshape(-1):
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    runs.append(length)
    uncompressed = {"size": [20, 25], "counts": runs}
    np.testing.assert_array_equal(decode_rle(uncompressed, (20, 25)), mask)
    assert rle_area(rle) == rle_area(as_bytes) == rle_area(uncompressed) == mask.sum() > 0
    assert rle_area(None) == 0
    assert not decode_rle(None, (4, 5)).any()
    with pytest.raises(ValueError, match="does not match"):
        decode_rle(rle, (25, 20))
    with pytest.raises(ValueError):
        decode_rle({"counts": "x"}, (2, 2))
