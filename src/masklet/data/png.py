"""Reading object-id masks stored as PNG files (DAVIS / YouTube-VOS convention).

An id mask is a 2-D integer array: 0 is background, every other value is an object id.
On disk it is either a palette PNG whose pixel values are the ids, or a grayscale PNG
that is either binary 0/255 (one object, id 1) or holds the ids directly.
Writing them is :func:`masklet.export.write_palette_png`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

BINARY_FOREGROUND = 255


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read mask PNG {path}: {err}") from err
    return image


def present_ids(ids: np.ndarray) -> list[int]:
    """Sorted distinct values of a non-negative id array (0 included when present)."""
    if ids.size == 0:
        return []
    if ids.min() >= 0 and ids.max() < 1 << 16:
        # A histogram is several times faster than np.unique on full-size frames.
        return np.flatnonzero(np.bincount(ids.ravel())).tolist()
    return np.unique(ids).tolist()


def _grayscale_ids(values: np.ndarray) -> np.ndarray:
    """Grayscale pixels -> ids: binary 0/255 masks become one object with id 1."""
    found = present_ids(values)
    if BINARY_FOREGROUND in found and set(found) <= {0, BINARY_FOREGROUND}:
        return (values == BINARY_FOREGROUND).astype(np.int32)
    return values.astype(np.int32)


def load_id_mask(path: str | os.PathLike) -> np.ndarray:
    """Load an object-id mask PNG.

    Returns:
        ids: [H, W] int32; 0 is background. Palette PNGs give their palette indices,
        1-bit PNGs and binary 0/255 grayscale PNGs give id 1 for the foreground,
        other grayscale PNGs give their pixel values.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, or is a colour image (a colour
            PNG has no unambiguous object ids; save masks as palette PNGs).
    """
    path = Path(path)
    with _open_image(path) as image:
        return _ids_from_image(image, path)


def _ids_from_image(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        return np.asarray(image, dtype=np.int32)
    if mode == "1":
        return np.asarray(image, dtype=bool).astype(np.int32)
    if mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return _grayscale_ids(np.asarray(image))
    if mode in ("LA", "RGB", "RGBA"):
        channels = np.asarray(image.convert("RGB"))
        gray = channels[..., 0]
        if (channels == gray[..., None]).all():
            return _grayscale_ids(gray)
    raise ValueError(
        f"mask PNG {path} has image mode {mode!r} with colours; "
        "expected a palette (mode 'P') or grayscale id mask"
    )


def load_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """Load a single-object mask PNG (any non-zero id is foreground): [H, W] bool."""
    return load_id_mask(path) > 0


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    with _open_header(Path(path)) as image:
        width, height = image.size
    return height, width


def _open_header(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Load an image file as [H, W, 3] uint8 RGB."""
    path = Path(path)
    with _open_header(path) as image:
        try:
            return np.asarray(image.convert("RGB"))
        except OSError as err:
            raise ValueError(f"cannot decode image {path}: {err}") from err
