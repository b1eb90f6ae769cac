"""The torch-free runtime's numpy pieces against the torch / masklet operations they
replace: bf16 rounding, bilinear resizes, hole filling, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from masklet.io.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_video_frame
from masklet.postprocess import fill_holes as torch_fill_holes
from masklet.predictor.prompts import mask_prompt
from masklet.tracking.step import non_overlapping as torch_non_overlapping
from masklet_runtime.bf16 import from_bf16_bits, round_to_bf16, to_bf16_bits
from masklet_runtime.postprocess import (
    fill_holes,
    non_overlapping,
    resize_bilinear,
    resize_bilinear_aa,
)
from masklet_runtime.preprocess import FramePreprocessor


def _torch_bf16_bits(x: np.ndarray) -> np.ndarray:
    bf = torch.from_numpy(x).to(torch.bfloat16)
    return bf.view(torch.int16).numpy().view(np.uint16)


def test_bf16_matches_torch_on_every_rounding_case():
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.17e-38, 3.4028235e38,
                        -3.4028235e38, 3.3961776e38, 1.0, 1.00390625, 1.01171875],
                       dtype=np.float32)
    # Ties: the 16 dropped bits exactly 0x8000, with the kept lowest bit odd and even.
    ties = (np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7F8000, 0x00008000],
                     dtype=np.uint32)).view(np.float32)
    random_bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([special, ties, random_bits.view(np.float32),
                        rng.normal(size=10_000).astype(np.float32)])
    finite = ~np.isnan(x)
    ours, ref = to_bf16_bits(x), _torch_bf16_bits(x)
    assert np.array_equal(ours[finite], ref[finite])
    # NaN stays NaN (torch's vector and scalar paths differ in the bit pattern).
    assert np.isnan(from_bf16_bits(ours[~finite])).all() and (~finite).sum() > 0
    back = torch.from_numpy(x[finite]).to(torch.bfloat16).float().numpy()
    assert np.array_equal(round_to_bf16(x[finite]), back)


@pytest.mark.parametrize("size", [(540, 960), (64, 64), (100, 37), (256, 256), (31, 500)])
def test_bilinear_resize_matches_torch(size):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, 1, 64, 64)) * 8).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                        align_corners=False).numpy()
    ours = resize_bilinear(x, size)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("shape,size", [((540, 960), (256, 256)), ((256, 256), (64, 64)),
                                        ((37, 91), (256, 256)), ((256, 256), (1024, 1024)),
                                        ((300, 200), (256, 256))])
def test_antialiased_resize_matches_torch(shape, size):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 1, *shape)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                        align_corners=False, antialias=True).numpy()
    ours = resize_bilinear_aa(x, size)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())


def test_mask_prompt_resize_then_binarise_matches_masklet():
    """Mask prompts are resized antialiased and thresholded at 0.5: exact agreement,
    including pixels that land on the threshold."""
    rng = np.random.default_rng(3)
    for shape in [(540, 960), (128, 128), (300, 500), (512, 512)]:
        mask = np.zeros(shape, dtype=bool)
        mask[shape[0] // 4: shape[0] * 3 // 4, shape[1] // 3: shape[1] * 2 // 3] = True
        mask |= rng.random(shape) > 0.97
        ref = mask_prompt(mask, image_size=256, device=torch.device("cpu")).numpy()
        ours = (resize_bilinear_aa(mask[None, None].astype(np.float32), (256, 256))
                >= 0.5).astype(np.float32)
        assert np.array_equal(ours, ref), shape


def _blobby_logits(rng, n, h, w, density):
    """Random logits whose background has holes of many sizes and shapes."""
    noise = rng.random((n, 1, h, w))
    smooth = F.avg_pool2d(torch.from_numpy(noise), 3, 1, 1).numpy()
    return ((smooth - density) * 10).astype(np.float32)


@pytest.mark.parametrize("density", [0.35, 0.5, 0.6])
@pytest.mark.parametrize("max_area", [1, 8, 40])
def test_fill_holes_matches_masklet(density, max_area):
    rng = np.random.default_rng(4)
    logits = _blobby_logits(rng, 3, 64, 96, density)
    ref = torch_fill_holes(torch.from_numpy(logits), max_area, fill_value=0.1).numpy()
    ours = fill_holes(logits, max_area, fill_value=0.1)
    assert np.array_equal(ours, ref)
    assert not np.array_equal(ref, logits)  # some hole was filled: the test can fail


def test_fill_holes_eight_connectivity_and_edges():
    """A diagonal chain of background pixels is one component (8-connected); holes at the
    border and a 1-pixel gap in a wide region count correctly."""
    logits = np.ones((1, 1, 8, 8), dtype=np.float32)
    for i in range(5):
        logits[0, 0, i, i] = -1.0  # 5 diagonal pixels: one component of area 5
    logits[0, 0, 7, 0] = -1.0  # a corner pixel: area 1
    ref = torch_fill_holes(torch.from_numpy(logits), 4, fill_value=0.1).numpy()
    ours = fill_holes(logits, 4, fill_value=0.1)
    assert np.array_equal(ours, ref)
    assert ours[0, 0, 0, 0] == -1.0 and ours[0, 0, 7, 0] == np.float32(0.1)


def test_non_overlapping_matches_masklet():
    rng = np.random.default_rng(5)
    masks = rng.normal(size=(3, 1, 20, 30)).astype(np.float32) * 20
    ref = torch_non_overlapping(torch.from_numpy(masks)).numpy()
    assert np.array_equal(non_overlapping(masks), ref)


@pytest.mark.parametrize("hw", [(540, 960), (256, 256), (77, 300)])
def test_preprocess_matches_masklet(hw):
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    ref = preprocess_video_frame(frame, 256).numpy()
    ours = FramePreprocessor(256, IMAGENET_MEAN, IMAGENET_STD)(frame)
    assert ours.shape == (1, 3, 256, 256)
    assert np.array_equal(ours[0], ref)


# ------------------------------------------------------------------ frame sources
def _read_all(source, limit=None):
    frames = []
    while limit is None or len(frames) < limit:
        frame = source.next_frame()
        if frame is None:
            break
        frames.append(frame)
    return frames


def test_folder_source_matches_masklet_order_and_pixels(tmp_path):
    from conftest import require_data

    from masklet.io import open_frames
    from masklet_runtime.sources import open_source

    bedroom = require_data("videos", "bedroom")
    # Names whose numeric order differs from their string order, plus files to ignore.
    for i, name in enumerate(["frame_10.jpg", "frame_9.jpg", "frame_100.JPEG"]):
        (tmp_path / name).symlink_to(bedroom / f"{i:05d}.jpg")
    (tmp_path / "._frame_1.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("x")
    ours, ref = open_source(tmp_path), open_frames(tmp_path)
    assert ours.num_frames == ref.num_frames == 3
    got = _read_all(ours)
    assert len(got) == 3 and all(np.array_equal(g, ref.get(i)) for i, g in enumerate(got))


def test_video_file_source_matches_masklet():
    from conftest import require_data

    from masklet.io import open_frames
    from masklet_runtime.sources import open_source

    path = require_data("videos", "dog.mp4")
    ours, ref = open_source(str(path)), open_frames(str(path))
    assert ours.num_frames == ref.num_frames == 289
    assert (ours.height, ours.width) == (ref.height, ref.width) == (720, 1280)
    got = _read_all(ours, limit=5)
    assert all(np.array_equal(g, ref.get(i)) for i, g in enumerate(got))
    ours.close()
    ref.close()


def test_array_and_live_sources_and_errors(tmp_path):
    from masklet_runtime.sources import VideoReadError, open_source

    frames = np.random.default_rng(7).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    array = open_source(frames)
    assert array.num_frames == 3 and len(_read_all(array)) == 3
    live = open_source(iter(list(frames)))
    assert live.num_frames is None and (live.height, live.width) == (8, 10)
    assert len(_read_all(live)) == 3 and live.num_frames == 3  # known once it ended
    with pytest.raises(VideoReadError, match="no such file or folder"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(VideoReadError, match="no .jpg"):
        open_source(tmp_path)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match="not a readable video"):
        open_source(tmp_path / "bad.mp4")
    with pytest.raises(VideoReadError, match="frame 1 is 4x10"):
        _read_all(open_source([frames[0], frames[1][:4]]))
    with pytest.raises(VideoReadError, match="dtype uint8"):
        open_source(iter([frames[0].astype(np.float32)]))
