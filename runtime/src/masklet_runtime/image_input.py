"""Still images -> model input, exactly as masklet.io.preprocess.preprocess_image.

masklet's image predictor divides by 255 in float32, resizes the float image with torch's
antialiased bilinear filter, then normalises. Pillow's float ('F' mode) bilinear resize
uses the same triangle filter widened by the scale factor, so it matches torch within
~4e-7 (measured on truck.jpg at 256, 1024 and 2048 px).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from masklet_runtime.preprocess import describe_frame_problem


def load_image(image) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a numpy array (grey [H, W] is expanded), a PIL image or a path
    (read as viewers show it: its EXIF orientation applied, as masklet does)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray) and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    problem = describe_frame_problem(image)
    if problem is not None:
        raise ValueError(f"image must be an RGB image [H, W, 3] uint8: {problem}")
    return image


def preprocess_image(
    image: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Still-image model input. image: [H, W, 3] uint8. Returns [1, 3, S, S] float32."""
    x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if x.shape[1:] != (image_size, image_size):  # torchvision skips a same-size resize too
        size = (image_size, image_size)
        x = np.stack([
            np.asarray(Image.fromarray(np.ascontiguousarray(ch)).resize(
                size, Image.Resampling.BILINEAR))
            for ch in x
        ])
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((x - m) / s)[None]
