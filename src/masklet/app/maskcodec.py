"""Masks as the app stores and serves them: COCO RLE strings, palette PNGs, colours."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from masklet.export import davis_palette

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def encode_rle(mask: np.ndarray) -> tuple[str, int]:
    """[H, W] bool -> (COCO compressed RLE counts, foreground area)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii"), int(mask_utils.area(rle))


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """COCO compressed RLE counts of an [H, W] mask -> [H, W] bool."""
    rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def rle_bbox(counts: str, height: int, width: int) -> list[float]:
    """[x, y, w, h] of a COCO RLE mask."""
    rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return [float(v) for v in mask_utils.toBbox(rle)]


def default_color(obj_id: int) -> str:
    r, g, b = davis_palette()[obj_id]
    return f"#{r:02x}{g:02x}{b:02x}"


def check_color(color: str) -> str:
    if not isinstance(color, str) or not _COLOR.match(color):
        raise ValueError(f"colour {color!r} must look like #rrggbb")
    return color.lower()


def label_map(masks: dict[int, np.ndarray], height: int, width: int) -> np.ndarray:
    """Object masks -> uint8 label map [H, W]; where objects overlap the smaller id wins."""
    out = np.zeros((height, width), dtype=np.uint8)
    for obj_id in sorted(masks, reverse=True):
        out[masks[obj_id]] = obj_id
    return out


def palette_png(labels: np.ndarray, colors: dict[int, str]) -> bytes:
    """An 8-bit palette PNG of a label map: index = object id, index 0 fully transparent."""
    palette = davis_palette()
    for obj_id, color in colors.items():
        palette[obj_id] = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    # putpalette turns the greyscale image into a palette image, keeping the indices.
    image = Image.fromarray(labels)
    image.putpalette(palette.reshape(-1).tolist())
    buf = io.BytesIO()
    # Level 1: masks compress well anyway, and clicks want the answer fast.
    image.save(buf, format="PNG", transparency=0, compress_level=1)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
