"""Frame sources, preprocessing and the prefetching loader (masklet.io) on real data."""

from __future__ import annotations

import gc
import itertools
import shutil
import threading
import time
import weakref

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import require_data, require_reference

from masklet.io import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArraySource,
    FrameIndexError,
    FrameSource,
    JpegFolderSource,
    LiveSource,
    PreprocessedFrames,
    VideoFileSource,
    VideoReadError,
    open_frames,
    preprocess_image,
    preprocess_video_frame,
)

DOG_FRAMES = 289
DOG_CHECKED = (*range(15), 100, 249, 250, 251, 260, 288)


def _bedroom():
    return require_data("videos", "bedroom")


def _pil_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


@pytest.fixture(scope="module")
def dog_reference():
    """(path, frame count, {index: frame}) from one plain sequential PyAV decode."""
    path = require_data("videos", "dog.mp4")
    frames, count = {}, 0
    with av.open(str(path)) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            if count - 1 in DOG_CHECKED:
                frames[count - 1] = frame.to_ndarray(format="rgb24")
    return path, count, frames


def _copy_frames(tmp_path, names_and_sources):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, source in names_and_sources:
        shutil.copy(source, folder / name)
    return folder


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "masklet-prefetch" and t.is_alive()]


# -- sources -------------------------------------------------------------------------------


def test_jpeg_folder_source_reads_bedroom():
    folder = _bedroom()
    with JpegFolderSource(folder) as source:
        assert (source.num_frames, len(source), source.height, source.width) == (60, 60, 540, 960)
        assert [p.name for p in source.paths[:3]] == ["00000.jpg", "00001.jpg", "00002.jpg"]
        for idx, frame in enumerate(itertools.islice(source, 3)):
            assert frame.dtype == np.uint8 and frame.shape == (540, 960, 3)
            np.testing.assert_array_equal(frame, _pil_rgb(folder / f"{idx:05d}.jpg"))
        np.testing.assert_array_equal(source.get(59), _pil_rgb(folder / "00059.jpg"))
        for bad in (60, -1):
            with pytest.raises(FrameIndexError, match="outside"):
                source.get(bad)


def test_folder_ordering_png_fallback_and_hidden_files(tmp_path):
    frame = _pil_rgb(_bedroom() / "00000.jpg")[:16, :24]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for value, name in [(2, "frame_2.png"), (10, "frame_10.png"), (1, "frame_1.png")]:
        Image.fromarray(np.full_like(frame, value)).save(folder / name)
    (folder / "._frame_0.png").write_bytes(b"macOS metadata, not an image")
    with JpegFolderSource(folder) as source:
        assert [p.name for p in source.paths] == ["frame_1.png", "frame_2.png", "frame_10.png"]
        assert [int(f[0, 0, 0]) for f in source] == [1, 2, 10]
    # JPEG frames win over PNG ones (the PNGs of a DAVIS-style folder are masks); case-insensitive.
    Image.fromarray(frame).save(folder / "7.JPG")
    Image.fromarray(frame).save(folder / "3.jpeg")
    with JpegFolderSource(folder) as source:
        assert [p.name for p in source.paths] == ["3.jpeg", "7.JPG"]


def test_video_file_source_matches_direct_pyav_decode(dog_reference):
    path, decoded_count, expected = dog_reference
    with VideoFileSource(path) as source:
        assert decoded_count == DOG_FRAMES
        assert source.num_frames == len(source) == DOG_FRAMES
        assert (source.height, source.width) == (720, 1280)
        for idx, frame in enumerate(itertools.islice(source, 15)):
            np.testing.assert_array_equal(frame, expected[idx])
        # Seeks forward past a keyframe (250), backwards across one, and within the cache.
        for idx in (260, 251, 250, 249, 100, 288, 14, 0):
            np.testing.assert_array_equal(source.get(idx), expected[idx], err_msg=f"frame {idx}")
        with pytest.raises(FrameIndexError):
            source.get(DOG_FRAMES)
    with pytest.raises(VideoReadError, match="closed"):
        source.get(0)


def test_video_bytes_via_open_frames(dog_reference):
    path, _, expected = dog_reference
    with open_frames(path.read_bytes()) as source:
        assert isinstance(source, VideoFileSource)
        assert source.num_frames == DOG_FRAMES
        np.testing.assert_array_equal(source.get(1), expected[1])


def test_array_source_list_and_stacked():
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    for given in (frames, np.stack(frames)):
        source = ArraySource(given)
        assert (source.num_frames, source.height, source.width) == (5, 4, 6)
        assert [int(f[0, 0, 0]) for f in source] == [0, 1, 2, 3, 4]
        with pytest.raises(FrameIndexError):
            source.get(5)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([np.zeros((4, 6, 3), np.uint8), np.zeros((4, 7, 3), np.uint8)], "one size"),
        ([np.zeros((4, 6, 3), np.float32)], "uint8"),
        ([np.zeros((4, 6), np.uint8)], r"\[H, W, 3\]"),
        (np.zeros((4, 6, 3), np.uint8), r"\[T, H, W, 3\]"),
        ([], "no frames"),
    ],
)
def test_array_source_rejects_bad_frames(frames, message):
    with pytest.raises(VideoReadError, match=message):
        ArraySource(frames)


def test_live_source_is_forward_only_with_unknown_length():
    def stream():
        for i in range(4):
            yield np.full((3, 5, 3), i, np.uint8)

    source = LiveSource(stream())
    assert source.num_frames is None and not source.random_access and bool(source)
    with pytest.raises(TypeError, match="not known"):
        len(source)
    assert int(source.get(2)[0, 0, 0]) == 2  # reads ahead, skipping frame 1
    with pytest.raises(FrameIndexError, match="only moves forward"):
        source.get(1)
    assert [int(f[0, 0, 0]) for f in source] == [2, 3]
    assert source.num_frames == len(source) == 4
    with pytest.raises(VideoReadError, match="no frames"):
        LiveSource(iter([]))


def test_open_frames_dispatch(dog_reference):
    path, _, _ = dog_reference
    frames = [np.zeros((2, 2, 3), np.uint8)] * 3
    assert isinstance(open_frames(_bedroom()), JpegFolderSource)
    assert isinstance(open_frames(str(_bedroom())), JpegFolderSource)
    with open_frames(path) as source:
        assert isinstance(source, VideoFileSource)
    assert isinstance(open_frames(frames), ArraySource)
    assert isinstance(open_frames(np.stack(frames)), ArraySource)
    assert isinstance(open_frames(iter(frames)), LiveSource)
    array_source = ArraySource(frames)
    assert open_frames(array_source) is array_source
    with pytest.raises(VideoReadError, match="cannot read a video from a int"):
        open_frames(5)


# -- errors --------------------------------------------------------------------------------


def test_errors_for_missing_and_empty_inputs(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoReadError, match="no such file or folder") as info:
        open_frames(missing)
    assert str(missing) in str(info.value)
    (tmp_path / "notes.txt").write_text("not a frame")
    with pytest.raises(VideoReadError, match="no .jpg, .jpeg or .png frames") as info:
        open_frames(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_errors_for_corrupt_and_truncated_video_files(tmp_path, dog_reference):
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoReadError, match="not a readable video") as info:
        open_frames(text)
    assert str(text) in str(info.value)

    data = dog_reference[0].read_bytes()
    half = tmp_path / "dog_half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="truncated") as info:
        open_frames(half)
    assert str(half) in str(info.value)

    stub = tmp_path / "dog_stub.mp4"
    stub.write_bytes(data[:2000])  # not even the whole header
    with pytest.raises(VideoReadError, match=str(stub)):
        open_frames(stub)


def test_errors_for_corrupt_or_mismatched_frame_images(tmp_path):
    bedroom = _bedroom()
    folder = _copy_frames(tmp_path, [(f"{i}.jpg", bedroom / f"{i:05d}.jpg") for i in range(3)])
    broken = folder / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:3000])
    with JpegFolderSource(folder) as source:
        source.get(0)
        with pytest.raises(VideoReadError, match="cannot read the image") as info:
            source.get(1)
        assert str(broken) in str(info.value)

    odd = tmp_path / "odd"
    odd.mkdir()
    Image.new("RGB", (8, 6)).save(odd / "0.png")
    Image.new("RGB", (8, 7)).save(odd / "1.png")
    with JpegFolderSource(odd) as source:
        with pytest.raises(VideoReadError, match="one size"):
            source.get(1)


# -- preprocessing -------------------------------------------------------------------------


def test_preprocess_video_frame_matches_reference_loader_bit_for_bit(tmp_path):
    """The official JPEG-folder loader (non-async path) on two bedroom frames at 1024."""
    require_reference()
    from sam2.utils import misc
    bedroom = _bedroom()
    folder = _copy_frames(
        tmp_path, [("0.jpg", bedroom / "00000.jpg"), ("1.jpg", bedroom / "00031.jpg")]
    )
    ref, ref_height, ref_width = misc.load_video_frames_from_jpg_images(
        str(folder), image_size=1024, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    with JpegFolderSource(folder) as source:
        assert (source.height, source.width) == (ref_height, ref_width)
        for idx in range(2):
            ours = preprocess_video_frame(source.get(idx), 1024)
            assert ours.dtype == torch.float32 and ours.shape == (3, 1024, 1024)
            assert torch.equal(ours, ref[idx]), (ours - ref[idx]).abs().max()


def _antialiased_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float64: a triangle filter widened by the scale when shrinking (PIL style)."""
    scale = in_size / out_size
    radius = max(scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        taps = np.arange(
            max(int(center - radius + 0.5), 0), min(int(center + radius + 0.5), in_size)
        )
        w = np.clip(1.0 - np.abs((taps + 0.5 - center) / radius), 0.0, None)
        weights[i, taps] = w / w.sum()
    return weights


def _hand_preprocess_image(image: np.ndarray, size: int) -> np.ndarray:
    x = image.astype(np.float64).transpose(2, 0, 1) / 255.0
    rows = _antialiased_bilinear_weights(image.shape[0], size)
    cols = _antialiased_bilinear_weights(image.shape[1], size)
    x = rows @ x @ cols.T
    return (x - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]


@pytest.mark.parametrize(("crop", "size"), [((97, 131), 32), ((20, 30), 48), ((40, 25), 32)])
def test_preprocess_image_is_antialiased_bilinear(crop, size):
    image = _pil_rgb(require_data("images", "truck.jpg"))[200 : 200 + crop[0], 300 : 300 + crop[1]]
    ours = preprocess_image(image, size)
    assert ours.dtype == torch.float32 and ours.shape == (3, size, size)
    expected = _hand_preprocess_image(image, size)
    assert np.abs(ours.numpy() - expected).max() < 1e-5
    if crop[0] > size:
        # The check can tell antialiasing apart from plain bilinear sampling.
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        plain = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        plain = (plain - mean) / std
        assert np.abs(plain.numpy() - expected).max() > 1e-2


def test_preprocess_image_at_official_size():
    image = _pil_rgb(require_data("images", "truck.jpg"))
    ours = preprocess_image(image, 1024)
    assert ours.shape == (3, 1024, 1024) and ours.dtype == torch.float32
    assert np.abs(ours.numpy() - _hand_preprocess_image(image, 1024)).max() < 1e-5
    # Already square at the target size: no resampling at all, like torchvision.
    square = image[:64, :64]
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    expected = (square.transpose(2, 0, 1) / np.float32(255) - mean) / std
    np.testing.assert_allclose(preprocess_image(square, 64).numpy(), expected, rtol=0, atol=1e-6)


def test_preprocess_image_matches_reference_transforms_when_torchvision_loads():
    """The official SAM2Transforms need torchvision, which cannot be imported in this
    environment."""
    require_reference()
    try:
        from sam2.utils.transforms import SAM2Transforms
    except Exception as err:  # noqa: BLE001 - any import failure means "cannot compare here"
        pytest.skip(f"sam2.utils.transforms needs torchvision, which does not import here ({err})")
    image = _pil_rgb(require_data("images", "truck.jpg"))
    ref = SAM2Transforms(resolution=1024, mask_threshold=0.0)(image)
    assert (preprocess_image(image, 1024) - ref).abs().max() <= 1e-6


def test_preprocess_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_video_frame(np.zeros((4, 4, 3), np.float32), 8)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        preprocess_image(np.zeros((4, 4, 4), np.uint8), 8)


# -- the preprocessed-frames loader --------------------------------------------------------


class _CountingPreprocess:
    """preprocess_video_frame that counts how many of its tensors are alive."""

    def __init__(self) -> None:
        self.alive = self.peak = 0
        self._lock = threading.Lock()

    def _released(self) -> None:
        with self._lock:
            self.alive -= 1

    def __call__(self, frame: np.ndarray, image_size: int) -> torch.Tensor:
        tensor = preprocess_video_frame(frame, image_size)
        with self._lock:
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(tensor, self._released)
        return tensor


def _wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_prefetch_gives_the_sequential_tensors_in_both_directions():
    folder = _bedroom()
    order = [*range(12), *range(11, -1, -1), 40, 7, 41, 3, 3, 59]
    with JpegFolderSource(folder) as source:
        expected = {i: preprocess_video_frame(source.get(i), 64) for i in set(order)}
    with PreprocessedFrames(
        JpegFolderSource(folder), image_size=64, prefetch=3, cache_size=2
    ) as frames:
        assert (frames.video_height, frames.video_width, len(frames)) == (540, 960, 60)
        for idx in order:
            assert torch.equal(frames[idx], expected[idx]), idx
        with pytest.raises(FrameIndexError):
            frames[60]
        assert _prefetch_threads()
    assert not _prefetch_threads()
    with pytest.raises(RuntimeError, match="closed"):
        frames[0]


def test_memory_stays_within_cache_plus_prefetch():
    counter = _CountingPreprocess()
    cache_size, prefetch = 2, 3
    frames = PreprocessedFrames(
        JpegFolderSource(_bedroom()),
        image_size=32,
        preprocess=counter,
        cache_size=cache_size,
        prefetch=prefetch,
    )
    with frames:
        frames[0]
        # The thread runs exactly `prefetch` frames ahead, then waits.
        assert _wait_until(lambda: frames.num_held_frames == 1 + prefetch)
        time.sleep(0.1)
        assert frames.num_held_frames == 1 + prefetch
        for idx in [*range(1, 20), *range(19, 5, -1), 50, 10, 51]:
            frames[idx]
            assert counter.alive <= cache_size + prefetch
            assert frames.num_held_frames <= cache_size + prefetch
    assert 0 < counter.peak <= cache_size + prefetch
    gc.collect()
    assert counter.alive == 0


def test_errors_in_the_prefetch_thread_reach_the_consumer(tmp_path):
    bedroom = _bedroom()
    folder = _copy_frames(tmp_path, [(f"{i}.jpg", bedroom / f"{i:05d}.jpg") for i in range(6)])
    broken = folder / "3.jpg"
    broken.write_bytes(b"garbage")
    with PreprocessedFrames(JpegFolderSource(folder), image_size=32, prefetch=2) as frames:
        for idx in range(3):
            frames[idx]
        with pytest.raises(VideoReadError, match="cannot read the image") as info:
            frames[3]
        assert str(broken) in str(info.value)
        assert frames[4].shape == (3, 32, 32)  # the thread survives and carries on

    class Boom(Exception):
        pass

    def explode_on_white(frame, image_size):
        if frame[0, 0, 0] == 255:
            raise Boom("bad frame")
        return preprocess_video_frame(frame, image_size)

    source = ArraySource([np.full((4, 4, 3), v, np.uint8) for v in (0, 255, 0)])
    with PreprocessedFrames(
        source, image_size=8, preprocess=explode_on_white, prefetch=1
    ) as frames:
        frames[0]
        with pytest.raises(Boom):
            frames[1]
        frames[2]


def test_prefetch_thread_stops_on_close_and_on_garbage_collection(dog_reference):
    source = VideoFileSource(dog_reference[0])
    frames = PreprocessedFrames(source, image_size=32, prefetch=2)
    frames[0]
    assert len(_prefetch_threads()) == 1
    frames.close()
    frames.close()
    assert not _prefetch_threads()
    with pytest.raises(VideoReadError, match="closed"):
        source.get(0)  # the loader closed the source it owns

    frames = PreprocessedFrames(
        ArraySource([np.zeros((4, 4, 3), np.uint8)] * 5), image_size=8, prefetch=2
    )
    frames[1]
    del frames
    gc.collect()
    assert _wait_until(lambda: not _prefetch_threads())


def test_live_source_through_the_loader():
    def camera():
        for i in range(7):
            yield np.full((6, 8, 3), 20 * i, np.uint8)

    with PreprocessedFrames(LiveSource(camera()), image_size=16, prefetch=2) as frames:
        assert frames.num_frames is None
        tensors = list(frames)
        assert len(tensors) == 7 and frames.num_frames == 7
        expected = preprocess_video_frame(np.full((6, 8, 3), 120, np.uint8), 16)
        assert torch.equal(tensors[6], expected)
        with pytest.raises(FrameIndexError):
            frames[7]


def test_cache_size_none_keeps_every_frame():
    source = ArraySource([np.full((4, 4, 3), i, np.uint8) for i in range(6)])
    with PreprocessedFrames(source, image_size=8, cache_size=None) as frames:
        first = [frames[i] for i in range(6)]
        assert frames.num_held_frames == 6
        assert all(frames[i] is first[i] for i in range(6))


def test_frame_source_protocol():
    assert issubclass(JpegFolderSource, FrameSource) and issubclass(LiveSource, FrameSource)
    with pytest.raises(TypeError):
        ArraySource([np.zeros((2, 2, 3), np.uint8)]).get(0.5)
