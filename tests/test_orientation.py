"""Phone videos and photos are read as players and viewers show them: a video file turned
by its display matrix, an image file by its EXIF orientation."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from masklet.io import VideoFileSource, open_frames
from masklet.io.images import load_image
from masklet_runtime.image_input import load_image as runtime_load_image
from masklet_runtime.sources import file_source, open_source

NUM_FRAMES = 12


def _stored_picture(idx: int) -> np.ndarray:
    """A 48x80 frame whose corners differ: a white block at the top left, a red one at the
    top right, the frame number in the blue channel of the rest."""
    picture = np.zeros((48, 80, 3), np.uint8)
    picture[..., 2] = 8 * idx
    picture[:16, :16] = 255
    picture[:16, -16:] = (255, 0, 0)
    return picture


def _write(path, degrees: int, hflip: bool = False, vflip: bool = False) -> None:
    """An H.264 file whose frames are stored unturned, with a display matrix set by PyAV
    (`degrees` counter-clockwise, then mirrored), or none when all three are off."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 80, 48, "yuv444p"
        stream.options = {"g": "4", "qp": "0"}  # keyframes every 4 frames: seeks are used
        if degrees or hflip or vflip:
            stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for idx in range(NUM_FRAMES):
            frame = av.VideoFrame.from_ndarray(_stored_picture(idx), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _shown(stored: np.ndarray, degrees: int, hflip: bool, vflip: bool) -> np.ndarray:
    """What PyAV documents the matrix to mean: turned counter-clockwise, then mirrored."""
    shown = np.rot90(stored, degrees // 90)
    if hflip:
        shown = shown[:, ::-1]
    if vflip:
        shown = shown[::-1]
    return shown


CASES = [(0, False, False), (90, False, False), (-90, False, False), (180, False, False),
         (90, True, False), (-90, True, False), (0, True, False), (0, False, True),
         (180, True, False)]


@pytest.mark.parametrize(("degrees", "hflip", "vflip"), CASES)
def test_frames_are_turned_as_the_display_matrix_says(tmp_path, degrees, hflip, vflip):
    path = tmp_path / "clip.mp4"
    _write(path, degrees, hflip, vflip)
    if not (hflip or vflip):  # (a mirrored matrix has no single rotation angle)
        with av.open(str(path)) as container:
            rotation = next(container.decode(video=0)).rotation
        assert rotation % 360 == degrees % 360  # the file says so
    with VideoFileSource(path, upright=False) as source:
        stored = [source.get(i) for i in range(NUM_FRAMES)]
    assert stored[0].shape == (48, 80, 3)
    expected = [_shown(frame, degrees, hflip, vflip) for frame in stored]

    with VideoFileSource(path, cache_size=2) as source:
        assert (source.height, source.width) == expected[0].shape[:2]
        # Backwards, so that frames come from seeks to earlier keyframes as well.
        for idx in reversed(range(NUM_FRAMES)):
            got = source.get(idx)
            # Contiguous, also where PyAV gives a view of padded rows (80 px wide).
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected[idx])
    with open_frames(str(path)) as source:
        np.testing.assert_array_equal(source.get(5), expected[5])

    # The torch-free runtime reads the same pixels.
    runtime = file_source(path)
    assert (runtime.height, runtime.width) == expected[0].shape[:2]
    frames = []
    while (frame := runtime.next_frame()) is not None:
        frames.append(frame)
    np.testing.assert_array_equal(np.stack(frames), np.stack(expected))
    assert all(f.flags.c_contiguous and f.flags.writeable for f in frames)  # not cached
    plain = file_source(path, upright=False)
    np.testing.assert_array_equal(plain.next_frame(), stored[0])
    np.testing.assert_array_equal(open_source(path.read_bytes()).next_frame(), expected[0])


def test_a_portrait_phone_video_is_shown_standing(tmp_path):
    """A phone held upright records its picture turned a quarter counter-clockwise and
    stores a rotation of -90 degrees (a quarter turn clockwise): what was stored at the
    top left is shown at the top right, and the picture stands taller than it is wide."""
    path = tmp_path / "portrait.mp4"
    _write(path, -90)
    with VideoFileSource(path) as source:
        assert (source.width, source.height) == (48, 80)
        shown = source.get(0)
        assert source.display_transform.transpose
    assert shown[:16, -16:].min() >= 250  # the white block, now top right
    red = shown[-16:, -16:]  # the red block, now bottom right
    assert red[..., 0].min() >= 250 and red[..., 1:].max() <= 5


def test_video_without_a_display_matrix_is_read_as_stored(tmp_path):
    path = tmp_path / "plain.mp4"
    _write(path, 0)
    with VideoFileSource(path) as source:
        assert source.display_transform.is_identity
        np.testing.assert_array_equal(source.get(3)[:16, :16], 255)


# What each EXIF orientation asks a viewer to do with the stored picture (the EXIF spec).
EXIF_SHOWN = {
    1: lambda p: p,
    2: lambda p: p[:, ::-1],  # mirrored left to right
    3: lambda p: np.rot90(p, 2),
    4: lambda p: p[::-1],  # mirrored top to bottom
    5: lambda p: p.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda p: np.rot90(p, -1),  # a quarter clockwise (a phone held upright)
    7: lambda p: np.rot90(p, 2).transpose(1, 0, 2),  # along the other diagonal
    8: lambda p: np.rot90(p, 1),  # a quarter counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(EXIF_SHOWN))
def test_image_files_are_read_as_viewers_show_them(tmp_path, orientation):
    stored = _stored_picture(3)
    path = tmp_path / "photo.png"  # lossless: the pixels compare exactly
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    expected = EXIF_SHOWN[orientation](stored)
    for read in (load_image, runtime_load_image):
        np.testing.assert_array_equal(read(path), expected)
        np.testing.assert_array_equal(read(str(path)), expected)
    with Image.open(path) as image:  # a PIL image or an array is taken as it is
        np.testing.assert_array_equal(load_image(image), stored)
