"""Video frames -> model input, exactly as masklet.io.preprocess.preprocess_video_frame.

Pillow bicubic resize of the uint8 frame to S x S, then per channel
(x / 255 computed in float64 and stored as float32 - mean) / std in float32. That is a
function of each uint8 level, so it is evaluated once per level and pixels look it up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def describe_frame_problem(frame: object) -> str | None:
    """Why ``frame`` is not an RGB image [H, W, 3] uint8, or None when it is one."""
    if not isinstance(frame, np.ndarray):
        return f"expected a numpy array, got {type(frame).__name__}"
    if frame.dtype != np.uint8:
        return f"expected dtype uint8, got {frame.dtype}"
    if frame.ndim != 3 or frame.shape[2] != 3:
        return f"expected shape [H, W, 3], got {list(frame.shape)}"
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        return f"expected a non-empty image, got shape {list(frame.shape)}"
    return None


def normalization_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[3, 256] float32: the normalised value of each uint8 level per channel."""
    levels = (np.arange(256, dtype=np.uint8) / 255.0).astype(np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    return (levels[None, :] - m) / s


class FramePreprocessor:
    """Turns [H, W, 3] uint8 RGB frames into [1, 3, S, S] float32 model inputs.

    Args:
        image_size: the model's input size S.
        mean, std: per-channel normalisation (the export's settings).
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self._table = normalization_table(mean, std)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        problem = describe_frame_problem(frame)
        if problem is not None:
            raise ValueError(f"frame must be an RGB image [H, W, 3] uint8: {problem}")
        size = self.image_size
        # Bicubic is Pillow's default for RGB; naming it keeps a changed default out.
        resized = Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized)
        out = np.empty((1, 3, size, size), dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], pixels[..., c], out=out[0, c])
        return out
