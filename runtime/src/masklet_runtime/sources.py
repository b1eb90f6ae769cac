"""Frame sources for the streaming tracker: a video file (PyAV), a folder of frame images,
frames in memory, or a live iterator. Each is read forwards, one frame at a time.

The frame order and count are masklet.io's: a folder's .jpg/.jpeg files (else its .png
files) ordered by the numbers in their names; a file's frames counted from its packets
(so a tracker knows the length of a file, as masklet does, and uses the same pointer
window); a live iterator's length is unknown until it ends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from masklet_runtime.preprocess import describe_frame_problem

_JPEG_SUFFIXES = (".jpg", ".jpeg")
_PNG_SUFFIXES = (".png",)
_DIGITS = re.compile(r"(\d+)", re.ASCII)


class VideoReadError(ValueError):
    """A video (file, folder, frames, stream) could not be read; the message names it."""


class FrameSource:
    """Frames [H, W, 3] uint8 RGB read in order by `next_frame` (None after the last).

    ``num_frames`` is None while the length is unknown (a live stream); ``height`` and
    ``width`` are known from the start.
    """

    name: str
    height: int
    width: int
    num_frames: int | None

    def __init__(self, frames: Iterator[np.ndarray], name: str,
                 num_frames: int | None) -> None:
        self.name = name
        self.num_frames = num_frames
        self._frames = frames
        self._next = 0
        first = self._pull()
        if first is None:
            raise VideoReadError(f"{name}: there are no frames")
        self.height, self.width = first.shape[:2]
        self._pending: np.ndarray | None = first

    def _pull(self) -> np.ndarray | None:
        frame = next(self._frames, None)
        if frame is None:
            return None
        problem = describe_frame_problem(frame)
        if problem is not None:
            raise VideoReadError(f"{self.name}: frame {self._next}: {problem}")
        if self._next and frame.shape[:2] != (self.height, self.width):
            raise VideoReadError(
                f"{self.name}: frame {self._next} is {frame.shape[0]}x{frame.shape[1]} but "
                f"the video is {self.height}x{self.width} (all frames must have one size)")
        self._next += 1
        return frame

    def next_frame(self) -> np.ndarray | None:
        """The next frame, or None once the source has ended (the length is then known)."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        frame = self._pull()
        if frame is None:
            self.num_frames = self._next
            self.close()
        return frame

    def close(self) -> None:
        """Release the file or iterator behind the source (idempotent)."""
        self._pending = None
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()
        self._frames = iter(())


# ----------------------------------------------------------------- folders
def _frame_order(path: Path) -> tuple[list[int | str], str]:
    parts = _DIGITS.split(path.stem)
    return [int(p) if p.isdigit() else p.lower() for p in parts], path.name


def _folder_frames(paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        try:
            with Image.open(path) as image:
                yield np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise VideoReadError(f"{path}: cannot read the image ({err})") from None


def folder_source(folder: Path) -> FrameSource:
    """The frame images of a folder ("00000.jpg", "frame_12.jpeg", ...), in frame order."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    frames = [p for p in files if p.suffix.lower() in _JPEG_SUFFIXES]
    if not frames:
        frames = [p for p in files if p.suffix.lower() in _PNG_SUFFIXES]
    if not frames:
        raise VideoReadError(f"{folder}: the folder has no .jpg, .jpeg or .png frames")
    frames.sort(key=_frame_order)
    return FrameSource(_folder_frames(frames), str(folder), len(frames))


# ------------------------------------------------------------------- files
def _open_container(target, name: str):
    import av

    try:
        return av.open(target, mode="r")
    except (av.error.FFmpegError, OSError) as err:
        raise VideoReadError(f"{name}: not a readable video file ({err})") from None


def _index_packets(target, name: str) -> tuple[int, dict[int, int] | None]:
    """(frame count, display index of each timestamp or None) from the file's packets:
    each packet with a timestamp is one frame, discarded packets are not (masklet's rule)."""
    import av

    container = _open_container(target, name)
    try:
        if not container.streams.video:
            raise VideoReadError(f"{name}: the file has no video stream")
        stream = container.streams.video[0]
        stamps, unstamped, demuxed = [], 0, 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            demuxed += 1
            if packet.is_discard:
                continue
            if packet.pts is None:
                unstamped += 1
            else:
                stamps.append(packet.pts)
        declared = stream.frames
    except av.error.FFmpegError as err:
        raise VideoReadError(f"{name}: the file is corrupt ({err})") from None
    finally:
        container.close()
    count = len(stamps) + unstamped
    if count == 0:
        raise VideoReadError(f"{name}: the video stream has no frames")
    if declared and demuxed < declared:
        raise VideoReadError(f"{name}: the file is truncated (the container declares "
                             f"{declared} frames but only {demuxed} could be read)")
    if unstamped or len(set(stamps)) != len(stamps):
        return count, None
    return count, {stamp: i for i, stamp in enumerate(sorted(stamps))}


def _display_turn(frame) -> tuple[bool, bool, bool]:
    """(swap axes, then reverse rows, reverse columns) that shows ``frame`` as a player
    does, from its display matrix (masklet.io.orientation's rule: a right-angle rotation,
    mirrored or not, is applied; no matrix or any other one leaves the pixels as stored)."""
    import av

    try:
        side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    except (AttributeError, KeyError):
        side = None
    m = np.frombuffer(bytes(side), dtype=np.int32) if side is not None else np.zeros(0)
    if m.size != 9:
        return False, False, False
    # Stored (x, y) is shown at (m0*x + m3*y, m1*x + m4*y) (16.16 fixed point).
    kept, swapped = abs(float(m[0])) + abs(float(m[4])), abs(float(m[1])) + abs(float(m[3]))
    if swapped < 1e-3 * kept:
        return False, bool(m[4] < 0), bool(m[0] < 0)
    if kept < 1e-3 * swapped:
        return True, bool(m[1] < 0), bool(m[3] < 0)
    return False, False, False


def _turned(rgb: np.ndarray, turn: tuple[bool, bool, bool]) -> np.ndarray:
    """``rgb`` turned, as a C-contiguous writable array (PyAV 18.1.1 may give a read-only
    view of padded rows)."""
    swap, rows, cols = turn
    if not (swap or rows or cols):
        return rgb if rgb.flags.c_contiguous and rgb.flags.writeable else rgb.copy()
    if swap:
        rgb = rgb.transpose(1, 0, 2)
    return np.ascontiguousarray(rgb[::-1 if rows else 1, ::-1 if cols else 1])


def _file_frames(target, name: str, index: dict[int, int] | None,
                 upright: bool) -> Iterator[np.ndarray]:
    import av

    container = _open_container(target, name)
    turn = None if upright else (False, False, False)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading: faster and bit-exact
        for frame in container.decode(stream):
            # A frame whose timestamp has no packet is not one of the counted frames.
            if index is not None and frame.pts not in index:
                continue
            if turn is None:  # the first frame's, for every frame: one frame size
                turn = _display_turn(frame)
            yield _turned(frame.to_ndarray(format="rgb24"), turn)
    except av.error.FFmpegError as err:
        raise VideoReadError(f"{name}: decoding failed ({err})") from None
    finally:
        container.close()


def file_source(video: str | os.PathLike | bytes, *, upright: bool = True) -> FrameSource:
    """A video file (a path, or its bytes) decoded as it is read, turned upright as its
    display matrix says (as players show it; ``upright=False``: the stored pixels)."""
    import io

    is_bytes = isinstance(video, (bytes, bytearray))
    name = "<video bytes>" if is_bytes else os.fspath(video)

    def target():
        return io.BytesIO(bytes(video)) if is_bytes else name

    count, index = _index_packets(target(), name)
    return FrameSource(_file_frames(target(), name, index, upright), name, count)


# ----------------------------------------------------------- arrays, streams
def array_source(frames: np.ndarray | Sequence[np.ndarray]) -> FrameSource:
    """Frames in memory: a [T, H, W, 3] uint8 array or a sequence of [H, W, 3] ones."""
    name = "<frame array>"
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise VideoReadError(
            f"{name}: expected a [T, H, W, 3] array of frames, got shape {list(frames.shape)}")
    return FrameSource(iter(frames), name, len(frames))


def open_source(video) -> FrameSource:
    """The frame source for ``video``: a folder or video-file path, video bytes, a
    [T, H, W, 3] uint8 array or a sequence of [H, W, 3] frames, an iterator of frames
    (read live), or a FrameSource (returned as is).

    Raises VideoReadError for a missing, unreadable, empty or unsupported input.
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (bytes, bytearray)):
        return file_source(bytes(video))
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return folder_source(path)
        if path.is_file():
            return file_source(path)
        raise VideoReadError(f"{path}: no such file or folder")
    if isinstance(video, (np.ndarray, Sequence)):
        return array_source(video)
    if isinstance(video, Iterable):
        return FrameSource(iter(video), "<live stream>", None)
    raise VideoReadError(
        f"cannot read a video from a {type(video).__name__}: expected a folder or file path, "
        "video bytes, [H, W, 3] uint8 frames (array, sequence or iterator) or a FrameSource")
