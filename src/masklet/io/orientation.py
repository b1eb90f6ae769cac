"""The display orientation of a video: phones record in the sensor's orientation and store
how a player must turn (or mirror) the picture, FFmpeg's display matrix, instead of
turning the pixels. Players, and FFmpeg when it extracts frames (the official SAM 2 way
to make a frame folder), apply it; a reader that does not shows a portrait video lying on
its side.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class DisplayTransform:
    """Turns a decoded [H, W, C] picture into the one a player shows: the axes swapped
    (``transpose``), then the rows and / or the columns reversed. The eight combinations are
    the rotations by multiples of 90 degrees, each with or without a mirror."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, picture: np.ndarray) -> np.ndarray:
        """[H, W, C] -> [H', W', C] (W', H' when transposed), C-contiguous (a copy unless
        `picture` already is and nothing is turned). Contiguous even untouched: PyAV 18.1.1
        hands out a view of the decoder's rows when they are padded (a width of 80 gives
        256-byte rows of 240 bytes of pixels)."""
        if self.transpose:
            picture = picture.transpose(1, 0, *range(2, picture.ndim))
        if self.flip_rows:
            picture = picture[::-1]
        if self.flip_cols:
            picture = picture[:, ::-1]
        return np.ascontiguousarray(picture)


def display_transform(frame: av.VideoFrame) -> DisplayTransform:
    """The transform the frame's display matrix asks for (identity without one).

    The matrix maps a stored pixel (x, y) (y downwards) to the shown one
    (a*x + c*y, b*x + d*y), plus a translation that only keeps it on screen; it is read
    from the frame's side data, which FFmpeg copies there from the container. A matrix
    that is not a right-angle rotation (with or without a mirror) cannot be shown on a
    pixel grid and is ignored, as players that do not resample do.
    """
    try:
        side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    except (AttributeError, KeyError):  # an older PyAV without the type
        return DisplayTransform()
    if side is None:
        return DisplayTransform()
    matrix = np.frombuffer(bytes(side), dtype=np.int32)
    if matrix.size != 9:
        return DisplayTransform()
    # Entries a, b, c, d are 16.16 fixed point; only their signs and zeros matter here.
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    if abs(b) + abs(c) < 1e-3 * (abs(a) + abs(d)):
        # Shown (a*x, d*y): each axis kept, possibly reversed.
        return DisplayTransform(flip_rows=d < 0, flip_cols=a < 0)
    if abs(a) + abs(d) < 1e-3 * (abs(b) + abs(c)):
        # Shown (c*y, b*x): the axes swap; shown row b*x reverses when b < 0, column c*y
        # when c < 0.
        return DisplayTransform(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    return DisplayTransform()
