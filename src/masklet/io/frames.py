"""Video frame sources: image folders, video files, in-memory arrays and live streams.

Every source yields RGB frames [H, W, 3] uint8 at the original resolution;
`open_frames` picks the right one for whatever the caller passes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from masklet.io.base import FrameIndexError, FrameSource, VideoReadError, describe_frame_problem
from masklet.io.video_file import VideoFileSource

__all__ = [
    "ArraySource",
    "FrameIndexError",
    "FrameSource",
    "JpegFolderSource",
    "LiveSource",
    "VideoFileSource",
    "VideoInput",
    "VideoReadError",
    "open_frames",
]

VideoInput = (
    FrameSource | str | os.PathLike | bytes | np.ndarray
    | Sequence[np.ndarray] | Iterable[np.ndarray]
)

_JPEG_SUFFIXES = (".jpg", ".jpeg")
_PNG_SUFFIXES = (".png",)
_DIGITS = re.compile(r"(\d+)", re.ASCII)


def _frame_order(path: Path) -> tuple[list[int | str], str]:
    """Sort key: numbers in the name compare as integers ("9.jpg" before "10.jpg")."""
    parts = _DIGITS.split(path.stem)
    return [int(p) if p.isdigit() else p.lower() for p in parts], path.name


def _list_frame_files(folder: Path) -> list[Path]:
    """The JPEG frames of `folder` in frame order, or its PNG frames when it has no JPEG."""
    # Dot-files include macOS "._00001.jpg" metadata, which are not images.
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    frames = [p for p in files if p.suffix.lower() in _JPEG_SUFFIXES]
    if not frames:
        frames = [p for p in files if p.suffix.lower() in _PNG_SUFFIXES]
    return sorted(frames, key=_frame_order)


def _image_error(path: Path, err: Exception) -> VideoReadError:
    return VideoReadError(f"{path}: cannot read the image ({err})")


class JpegFolderSource(FrameSource):
    """A folder of frame images named by frame number ("00000.jpg", "frame_12.jpeg", ...).

    Frames are the folder's .jpg/.jpeg files (any letter case), or its .png files
    when it has no JPEG, ordered by the numbers in their names. Each frame is read
    from disk when requested and converted to RGB, as the reference loader does.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        folder = Path(path)
        super().__init__(name=str(folder))
        if not folder.is_dir():
            raise VideoReadError(f"{folder}: no such folder")
        self.paths = _list_frame_files(folder)
        if not self.paths:
            raise VideoReadError(f"{folder}: the folder has no .jpg, .jpeg or .png frames")
        try:
            with Image.open(self.paths[0]) as image:
                self.width, self.height = image.size
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise _image_error(self.paths[0], err) from err

    @property
    def num_frames(self) -> int:
        return len(self.paths)

    def _read(self, idx: int) -> np.ndarray:
        path = self.paths[idx]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise _image_error(path, err) from err


class ArraySource(FrameSource):
    """Frames already in memory: a [T, H, W, 3] uint8 array or a sequence of [H, W, 3] ones.

    The frames are validated (dtype, shape, one common size) up front and are not copied.
    """

    def __init__(
        self, frames: np.ndarray | Sequence[np.ndarray], *, name: str = "<frame array>"
    ) -> None:
        super().__init__(name=name)
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise VideoReadError(
                f"{name}: expected a [T, H, W, 3] array of frames, got shape {list(frames.shape)}"
            )
        if len(frames) == 0:
            raise VideoReadError(f"{name}: there are no frames")
        # One check covers a stacked array, whose frames all share dtype and shape.
        to_check = frames[:1] if isinstance(frames, np.ndarray) else frames
        for idx, frame in enumerate(to_check):
            problem = describe_frame_problem(frame)
            if problem is not None:
                raise VideoReadError(f"{name}: frame {idx}: {problem}")
            if frame.shape != to_check[0].shape:
                raise VideoReadError(
                    f"{name}: frame {idx} has shape {list(frame.shape)} but frame 0 has "
                    f"{list(to_check[0].shape)} (all frames must have one size)"
                )
        self._frames = frames
        self.height, self.width = frames[0].shape[:2]

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    def _read(self, idx: int) -> np.ndarray:
        return self._frames[idx]


class LiveSource(FrameSource):
    """Frames from an iterator as they arrive (a camera, a network stream), forward only.

    The length is unknown (`num_frames` is None) until the iterator is exhausted.
    Only the latest frame is held: `get` accepts that frame's index or any later
    one (reading ahead, skipping frames in between) and raises FrameIndexError for
    earlier ones. Iterating yields the frames from the current one to the end.
    """

    random_access = False

    def __init__(self, frames: Iterable[np.ndarray], *, name: str = "<live stream>") -> None:
        super().__init__(name=name)
        self._frames: Iterator[np.ndarray] = iter(frames)
        self._length: int | None = None
        first = next(self._frames, None)
        if first is None:
            raise VideoReadError(f"{name}: the stream produced no frames")
        problem = describe_frame_problem(first)
        if problem is not None:
            raise VideoReadError(f"{name}: frame 0: {problem}")
        self.height, self.width = first.shape[:2]
        self._current_index = 0
        self._current: np.ndarray | None = first

    @property
    def num_frames(self) -> int | None:
        return self._length

    def _read(self, idx: int) -> np.ndarray:
        if idx < self._current_index or self._current is None:
            raise FrameIndexError(
                f"{self.name}: frame {idx} is no longer available (a live stream only moves "
                f"forward; it is at frame {self._current_index})"
            )
        while self._current_index < idx:
            frame = next(self._frames, None)
            if frame is None:
                self._length = self._current_index + 1
                raise FrameIndexError(f"{self.name}: the stream ended after {self._length} frames")
            self._current_index += 1
            self._current = frame
        return self._current

    def __iter__(self) -> Iterator[np.ndarray]:
        idx = self._current_index
        while True:
            try:
                frame = self.get(idx)
            except FrameIndexError:
                if self._length is not None and idx >= self._length:
                    return
                raise
            yield frame
            idx += 1

    def close(self) -> None:
        self._current = None
        close_iterator = getattr(self._frames, "close", None)
        if close_iterator is not None:
            close_iterator()


def open_frames(video: VideoInput) -> FrameSource:
    """The frame source for `video`.

    video: a frame folder path, a video file path (anything PyAV reads) or its
      bytes, a [T, H, W, 3] uint8 array or a sequence of [H, W, 3] uint8 frames,
      an iterator of such frames (read live), or a FrameSource (returned as is).
    Raises VideoReadError when the input is missing, empty, corrupt or unsupported.
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (bytes, bytearray)):
        return VideoFileSource(bytes(video))
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return JpegFolderSource(path)
        if path.is_file():
            return VideoFileSource(path)
        raise VideoReadError(f"{path}: no such file or folder")
    if isinstance(video, (np.ndarray, Sequence)):
        return ArraySource(video)
    if isinstance(video, Iterable):
        return LiveSource(video)
    raise VideoReadError(
        f"cannot read a video from a {type(video).__name__}: expected a folder or file path, "
        "video bytes, [H, W, 3] uint8 frames (array, sequence or iterator) or a FrameSource"
    )
