"""Reading still images into RGB uint8 arrays, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(ValueError):
    """An image that is missing, unreadable or of an unsupported form."""


def load_image(image) -> np.ndarray:
    """Return an [H, W, 3] uint8 RGB array from a numpy array, a PIL image or a file path.

    A file is read as viewers show it: a phone photo is stored sideways with an EXIF
    orientation tag, and is turned (or mirrored) as the tag says, so that points picked in
    a viewer and the masks returned fit the photo people see (detection tools read images
    the same way). Arrays and PIL images are taken as they are. Numpy input must already
    be RGB uint8 (HxWx3); grey (HxW) arrays are expanded.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(Path(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return _check_array(image)
    raise ImageReadError(
        f"unsupported image type {type(image).__name__}; "
        "give an HxWx3 uint8 numpy array, a PIL image or a path"
    )


def _read_file(path: Path) -> np.ndarray:
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: more pixels than Pillow decodes (about 179 million).
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def _check_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(f"image array must have shape [H, W, 3] (RGB), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ImageReadError(f"image array must be uint8 in [0, 255], got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"image array is empty: shape {arr.shape}")
    return arr
