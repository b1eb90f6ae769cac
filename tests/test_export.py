"""Output writers: atomic files/folders, palette PNGs, COCO / SA-V JSON, overlay PNG and video."""

from __future__ import annotations

import json
import os
import stat

import av
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from conftest import require_data

from masklet.export import (
    OverlayVideoWriter,
    atomic_dir,
    atomic_path,
    atomic_write,
    davis_palette,
    decode_coco_rle,
    image_masks_to_coco,
    label_map_from_masks,
    overlay_masks,
    read_davis_sequence,
    read_palette_png,
    video_masks_to_coco,
    video_masks_to_sav,
    write_davis_sequence,
    write_json,
    write_overlay_png,
    write_palette_png,
)


class Boom(Exception):
    pass


def _entries(folder) -> list[str]:
    return sorted(os.listdir(folder))


def _blob_masks(seed: int, n: int, h: int, w: int) -> np.ndarray:
    """[n, H, W] bool masks made of random rectangles (overlapping each other)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for m in masks:
        for _ in range(2):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            m[y0 : y0 + rng.integers(2, h // 2), x0 : x0 + rng.integers(2, w // 2)] = True
    return masks


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_success_text_and_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_write(target, "w") as f:
        f.write("héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert _entries(target.parent) == ["out.json"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_write_failure_leaves_nothing(tmp_path, error):
    fresh, existing = tmp_path / "fresh.bin", tmp_path / "existing.bin"
    existing.write_bytes(b"old")
    for target in (fresh, existing):
        with pytest.raises(error):
            with atomic_write(target) as f:
                f.write(b"partial data")
                f.flush()
                raise error()
    assert not fresh.exists()
    assert existing.read_bytes() == b"old"
    assert _entries(tmp_path) == ["existing.bin"]


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x", "rb"):
            pass


def test_atomic_path_keeps_extension_and_cleans_up(tmp_path):
    with atomic_path(tmp_path / "clip.mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "clip.mp4").read_bytes() == b"x"
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "other.mp4") as tmp:
            tmp.write_bytes(b"y")
            raise Boom
    assert _entries(tmp_path) == ["clip.mp4"]


def test_atomic_dir_semantics(tmp_path):
    target = tmp_path / "seq"
    with atomic_dir(target) as tmp:
        assert not target.exists()
        (tmp / "a.txt").write_text("1")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("2")
    assert (target / "nested" / "b.txt").read_text() == "2"
    assert _entries(tmp_path) == ["seq"]

    # A non-empty folder is refused up front, before any work, unless overwrite=True.
    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pytest.fail("the block must not run")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("3")
    assert _entries(target) == ["c.txt"]
    assert _entries(tmp_path) == ["seq"]

    # A failure inside the block keeps the old folder and removes the temporary one.
    for error in (Boom, KeyboardInterrupt):
        with pytest.raises(error):
            with atomic_dir(target, overwrite=True) as tmp:
                (tmp / "d.txt").write_text("4")
                raise error()
    assert _entries(target) == ["c.txt"]
    assert _entries(tmp_path) == ["seq"]

    # An empty folder is simply replaced; a file in the way is an error.
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "e.txt").write_text("5")
    assert _entries(tmp_path / "empty") == ["e.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "file", overwrite=True):
            pass


def test_atomic_dir_refuses_folder_filled_during_the_block(tmp_path):
    target = tmp_path / "seq"
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as tmp:
            (tmp / "mine.txt").write_text("1")
            target.mkdir()
            (target / "theirs.txt").write_text("2")
    assert _entries(target) == ["theirs.txt"]
    assert _entries(tmp_path) == ["seq"]


# ---------------------------------------------------------------- palette PNG


def test_davis_palette():
    palette = davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected_start = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128),
                      (128, 0, 128), (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0)]
    assert [tuple(c) for c in palette[:10]] == expected_start
    # Last entry of the palette SAM 2's VOS tools write (DAVIS 2017 PNGs).
    assert tuple(palette[255]) == (224, 224, 192)
    assert len({tuple(c) for c in palette}) == 256


def test_palette_png_round_trip(tmp_path):
    masks = _blob_masks(0, 4, 30, 40)
    by_id = {
        3: masks[0], 7: torch.from_numpy(masks[1]), 12: masks[2][None],
        255: masks[3].astype(np.uint8),
    }
    path = tmp_path / "f.png"
    write_palette_png(path, by_id)
    labels, palette = read_palette_png(path)
    with Image.open(path) as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(palette[:256], davis_palette())
    # Every pixel holds the smallest id whose mask covers it.
    expected = np.zeros((30, 40), dtype=np.uint8)
    for obj_id, mask in reversed(list(zip((3, 7, 12, 255), masks))):
        expected[mask] = obj_id
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 3, 7, 12, 255} and (labels == 3).any()

    # A label map is written as is; torch logits are thresholded at 0.
    label_map = np.random.default_rng(1).integers(0, 256, (17, 9)).astype(np.int64)
    write_palette_png(path, label_map)
    np.testing.assert_array_equal(read_palette_png(path)[0], label_map)
    logits = torch.full((1, 5, 6), -3.0)
    logits[0, 1:3, 2:4] = 2.0
    expected = (logits[0] > 0).numpy() * 4
    np.testing.assert_array_equal(label_map_from_masks({4: logits}), expected)
    np.testing.assert_array_equal(label_map_from_masks({4: logits.bfloat16()}), expected)


def test_palette_png_rejects_bad_ids(tmp_path):
    mask = np.ones((4, 4), dtype=bool)
    for bad in (0, 256, -1):
        with pytest.raises(ValueError):
            write_palette_png(tmp_path / "x.png", {bad: mask})
    with pytest.raises(ValueError):
        write_palette_png(tmp_path / "x.png", np.full((4, 4), 300))
    assert _entries(tmp_path) == []


def test_davis_sequence_layout(tmp_path):
    masks = _blob_masks(2, 3, 24, 32)
    frames = {i: {1: masks[i], 2: masks[(i + 1) % 3]} for i in range(3)}
    seq = write_davis_sequence(tmp_path, "bear", frames)
    assert seq == tmp_path / "bear"
    assert _entries(seq) == ["00000.png", "00001.png", "00002.png"]
    read = read_davis_sequence(seq)
    for i in range(3):
        np.testing.assert_array_equal(read[f"{i:05d}"], label_map_from_masks(frames[i]))
    with pytest.raises(FileExistsError):
        write_davis_sequence(tmp_path, "bear", frames)
    # YouTube-VOS keeps source frame names.
    write_davis_sequence(tmp_path, "bear", {"00005": frames[0], "00010": frames[1]}, overwrite=True)
    assert _entries(seq) == ["00005.png", "00010.png"]
    assert _entries(tmp_path) == ["bear"]


def test_real_davis_annotation_round_trip(tmp_path):
    ann = require_data("davis2016-train", "Annotations", "480p", "bmx-trees", "00000.png")
    grey, palette = read_palette_png(ann)
    assert palette is None and set(np.unique(grey)) == {0, 255}
    write_palette_png(tmp_path / "00000.png", {1: grey == 255})
    labels, _ = read_palette_png(tmp_path / "00000.png")
    np.testing.assert_array_equal(labels, (grey == 255).astype(np.uint8))


# ---------------------------------------------------------------- COCO and SA-V JSON


def test_coco_image_json_round_trip(tmp_path):
    masks_a, masks_b = _blob_masks(3, 3, 20, 30), _blob_masks(4, 2, 25, 15)
    data = image_masks_to_coco([
        {"file_name": "a.jpg", "masks": torch.from_numpy(masks_a), "scores": [0.9, 0.8, 0.7]},
        {"file_name": "b.jpg", "masks": list(masks_b), "category_ids": [2, 5]},
    ])
    path = tmp_path / "coco.json"
    write_json(path, data)
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert [c["id"] for c in data["categories"]] == [1, 2, 5]
    for image_id, masks in ((1, masks_a), (2, masks_b)):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(masks)
        for ann, mask in zip(anns, masks):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [
                xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            ]
            assert isinstance(ann["segmentation"]["counts"], str)
    anns_a = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["score"] for a in anns_a] == [0.9, 0.8, 0.7]
    assert all("score" not in a for a in coco.loadAnns(coco.getAnnIds(imgIds=[2])))


def test_coco_video_json_round_trip(tmp_path):
    masks = _blob_masks(5, 6, 20, 24)
    frames = [
        {1: masks[0], 4: masks[1]},
        {1: masks[2], 4: np.zeros((20, 24), bool)},
        label_map_from_masks({2: masks[3]}),
    ]
    data = video_masks_to_coco("dog", frames)
    path = tmp_path / "video.json"
    write_json(path, data)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3
    seen = {(coco.imgs[a["image_id"]]["frame_index"], a["track_id"]): coco.annToMask(a).astype(bool)
            for a in coco.loadAnns(coco.getAnnIds())}
    # The empty mask of object 4 in frame 1 is not annotated.
    assert sorted(seen) == [(0, 1), (0, 4), (1, 1), (2, 2)]
    for (frame, obj_id), mask in seen.items():
        expected = (
            frames[frame][obj_id] if isinstance(frames[frame], dict) else frames[frame] == obj_id
        )
        np.testing.assert_array_equal(mask, expected)


def test_sav_json_round_trip(tmp_path):
    masks = _blob_masks(6, 5, 18, 22)
    frames = [{0: masks[0], 3: masks[1]}, {3: masks[2]}, {0: masks[3], 3: masks[4]}]
    data = video_masks_to_sav("sav_000001", frames)
    path = tmp_path / "sav.json"
    write_json(path, data)
    loaded = json.loads(path.read_text())
    assert loaded["video_id"] == "sav_000001"
    assert (loaded["video_height"], loaded["video_width"]) == (18, 22)
    assert loaded["masklet_id"] == [0, 3] and loaded["masklet_num"] == 2
    assert len(loaded["masklet"]) == 3 and all(len(f) == 2 for f in loaded["masklet"])
    for frame, rles in zip(frames, loaded["masklet"]):
        for obj_id, rle in zip(loaded["masklet_id"], rles):
            expected = frame.get(obj_id, np.zeros((18, 22), bool))
            np.testing.assert_array_equal(decode_coco_rle(rle), expected)
    with pytest.raises(ValueError):
        video_masks_to_sav("empty", [{}])
    with pytest.raises(ValueError):
        video_masks_to_sav("mixed", [{1: masks[0]}, {1: masks[1][:-1]}])
    assert video_masks_to_sav("empty", [{}], height=4, width=5)["masklet"] == [[]]


# ---------------------------------------------------------------- overlays


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_overlay_pixels():
    image = _image(20, 30)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:20] = True
    out = overlay_masks(image, {2: mask}, alpha=0.25, contour_thickness=1)
    color = davis_palette()[2].astype(np.float32)
    np.testing.assert_array_equal(out[~mask], image[~mask])  # background untouched
    inner = (slice(6, 14), slice(6, 19))
    blended = image[inner] * np.float32(0.75) + color * np.float32(0.25) + 0.5
    expected = np.clip(blended, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[inner], expected)
    border = mask.copy()
    border[inner] = False
    assert (out[border] == davis_palette()[2]).all()  # 1-pixel opaque outline inside
    assert (overlay_masks(image, {}) == image).all()
    # A stack is drawn as ids 1..N; a mask touching the image border has no outline there.
    full = np.ones((1, 20, 30), bool)
    out = overlay_masks(image, full, contour_thickness=3)
    assert not (out == davis_palette()[1]).all(axis=-1).any()


def test_write_overlay_png(tmp_path):
    image = _image(21, 33)
    masks = _blob_masks(7, 3, 21, 33)
    path = tmp_path / "overlay.png"
    write_overlay_png(path, image, masks)
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (33, 21)
        np.testing.assert_array_equal(np.asarray(png), overlay_masks(image, masks))


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, stream.average_rate, frames


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_overlay_video(tmp_path, codec):
    h, w, n = 49, 65, 7  # odd sizes are padded to even for yuv420p
    masks = _blob_masks(8, n, h, w)
    path = tmp_path / "out.mp4"
    with OverlayVideoWriter(path, fps=12, codec=codec) as writer:
        for i in range(n):
            writer.write(np.full((h, w, 3), 40 * (i % 5), np.uint8), {1: masks[i]})
    assert writer.frames_written == n
    assert _entries(tmp_path) == ["out.mp4"]
    name, rate, frames = _decode(path)
    assert name == (codec or ("h264" if writer.codec == "libx264" else "mpeg4"))
    assert rate == 12 and len(frames) == n
    assert all(f.shape == (h + 1, w + 1, 3) for f in frames)
    # Decoded content follows the written frames (lossy, so loosely).
    expected = overlay_masks(np.full((h, w, 3), 80, np.uint8), {1: masks[2]})
    assert np.abs(frames[2][:h, :w].astype(int) - expected).mean() < 6


def test_overlay_video_error_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with OverlayVideoWriter(tmp_path / "out.mp4", fps=5) as writer:
            writer.write_frame(_image(16, 16))
            raise Boom
    with pytest.raises(ValueError):
        with OverlayVideoWriter(tmp_path / "out.mp4") as writer:
            writer.write_frame(_image(16, 16))
            writer.write_frame(_image(18, 16))  # size change
    with pytest.raises(ValueError):
        with OverlayVideoWriter(tmp_path / "out.mp4"):
            pass  # no frames
    assert _entries(tmp_path) == []


def test_overlay_real_frame(tmp_path):
    frame_path = require_data("videos", "bedroom", "00000.jpg")
    with Image.open(frame_path) as img:
        image = np.asarray(img.convert("RGB"))
    h, w = image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    write_overlay_png(tmp_path / "bedroom.png", image, {1: mask})
    with OverlayVideoWriter(tmp_path / "bedroom.mp4", fps=30000 / 1001) as writer:
        writer.write(image, {1: mask})
        writer.write(image)
    _, rate, frames = _decode(tmp_path / "bedroom.mp4")
    assert len(frames) == 2 and frames[0].shape == (h, w, 3)
    assert abs(float(rate) - 29.97) < 0.01
