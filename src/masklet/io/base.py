"""The frame-source interface shared by every kind of video input, and its errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType

import numpy as np


class VideoReadError(ValueError):
    """A video (folder, file, array or stream) could not be read; the message names it."""


class FrameIndexError(VideoReadError, IndexError):
    """A frame index outside the video, or no longer reachable in a live stream."""


def describe_frame_problem(frame: object) -> str | None:
    """Why `frame` is not an RGB image [H, W, 3] uint8, or None when it is one."""
    if not isinstance(frame, np.ndarray):
        return f"expected a numpy array, got {type(frame).__name__}"
    if frame.dtype != np.uint8:
        return f"expected dtype uint8, got {frame.dtype}"
    if frame.ndim != 3 or frame.shape[2] != 3:
        return f"expected shape [H, W, 3], got {list(frame.shape)}"
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        return f"expected a non-empty image, got shape {list(frame.shape)}"
    return None


class FrameSource(ABC):
    """A video as a sequence of RGB frames [H, W, 3] uint8, all of one size.

    `height` and `width` are the original video resolution. `num_frames` is None
    while the length is unknown (a live stream that has not ended yet); `len()`
    then raises TypeError. Sources with `random_access = False` can only move
    forward (see `LiveSource`). Use as a context manager, or call `close()`.
    """

    random_access: bool = True
    height: int
    width: int

    def __init__(self, *, name: str) -> None:
        # Subclasses set `height` and `width` once they have seen the first frame.
        self.name = name

    @property
    @abstractmethod
    def num_frames(self) -> int | None:
        """The number of frames, or None while it is not known yet."""

    @abstractmethod
    def _read(self, idx: int) -> np.ndarray:
        """Frame `idx` (already checked to be >= 0 and below a known length)."""

    def check_index(self, idx: int) -> int:
        """`idx` as an int; FrameIndexError if negative or past a known length."""
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(idx).__name__}")
        idx = int(idx)
        total = self.num_frames
        if idx < 0 or (total is not None and idx >= total):
            bound = "?" if total is None else total - 1
            raise FrameIndexError(f"{self.name}: frame index {idx} is outside [0, {bound}]")
        return idx

    def get(self, idx: int) -> np.ndarray:
        """Frame `idx` as [H, W, 3] uint8 RGB. Treat it as read-only: it may be shared."""
        idx = self.check_index(idx)
        frame = self._read(idx)
        self._check_frame(frame, idx)
        return frame

    def _check_frame(self, frame: np.ndarray, idx: int) -> None:
        problem = describe_frame_problem(frame)
        if problem is not None:
            raise VideoReadError(f"{self.name}: frame {idx}: {problem}")
        if frame.shape[:2] != (self.height, self.width):
            raise VideoReadError(
                f"{self.name}: frame {idx} is {frame.shape[0]}x{frame.shape[1]} but the video "
                f"is {self.height}x{self.width} (all frames must have one size)"
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every frame in order, from frame 0."""
        total = self.num_frames
        if total is None:
            raise TypeError(f"{self.name}: the length is unknown; this source must iterate itself")
        for idx in range(total):
            yield self.get(idx)

    def __len__(self) -> int:
        total = self.num_frames
        if total is None:
            raise TypeError(f"{self.name}: the number of frames is not known yet (live stream)")
        return total

    def __bool__(self) -> bool:
        # Without this, truth-testing a live source would call __len__ and raise.
        return True

    # A no-op by default, not abstract: sources that keep nothing open need no cleanup.
    def close(self) -> None:  # noqa: B027
        """Release files or decoders held by the source (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, num_frames={self.num_frames}, "
            f"height={self.height}, width={self.width})"
        )
