"""SA-1B images: ``sa_N.jpg`` next to ``sa_N.json`` holding COCO-RLE mask annotations.

The JSON is ``{"image": {"image_id", "width", "height", "file_name"}, "annotations": [
{"id", "segmentation": RLE, "area", "bbox": [x, y, w, h], "predicted_iou",
"stability_score", "point_coords": [[x, y]], "crop_box": [x, y, w, h]}, ...]}``.
Masks are decoded lazily: an image holds about a hundred of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklet.data.png import load_rgb
from masklet.data.rle import decode_rle, rle_size


@dataclass(frozen=True)
class Sa1bAnnotation:
    """One SA-1B mask. ``bbox`` and ``crop_box`` are [x, y, w, h] in pixels."""

    id: int
    segmentation: dict[str, Any]
    area: int
    bbox: tuple[float, float, float, float]
    predicted_iou: float | None
    stability_score: float | None
    point_coords: tuple[tuple[float, float], ...]
    crop_box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class Sa1bImage:
    """One SA-1B image with its annotations."""

    image_id: int
    file_name: str
    height: int
    width: int
    image_path: Path
    annotations: tuple[Sa1bAnnotation, ...]
    source: str = ""

    def load_image(self) -> np.ndarray:
        """The image as [H, W, 3] uint8; its size must match the JSON."""
        image = load_rgb(self.image_path)
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"{self.image_path} is {image.shape[:2]} (H, W) but {self.source} says "
                f"{(self.height, self.width)}"
            )
        return image

    def decode_mask(self, index: int) -> np.ndarray:
        """Mask of annotation ``index``: [H, W] bool."""
        ann = self.annotations[index]
        where = f"{self.source}: annotation id {ann.id}"
        return decode_rle(ann.segmentation, (self.height, self.width), where=where)

    def decode_masks(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Masks of the chosen annotations (all by default): [N, H, W] bool."""
        chosen = range(len(self.annotations)) if indices is None else indices
        masks = np.zeros((len(chosen), self.height, self.width), dtype=bool)
        for row, index in enumerate(chosen):
            masks[row] = self.decode_mask(index)
        return masks


def _box(values: Any) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    return x, y, w, h


def _parse_annotation(raw: dict[str, Any], size: tuple[int, int], where: str) -> Sa1bAnnotation:
    if "segmentation" not in raw:
        raise ValueError(f"{where}: annotation without 'segmentation'")
    seg = raw["segmentation"]
    if not isinstance(seg, dict) or rle_size(seg) != size:
        raise ValueError(f"{where}: segmentation must be an RLE of size {size} (H, W)")
    optional = {key: raw.get(key) for key in ("predicted_iou", "stability_score")}
    return Sa1bAnnotation(
        id=int(raw.get("id", -1)),
        segmentation=seg,
        area=int(raw.get("area", 0)),
        bbox=_box(raw.get("bbox", (0, 0, 0, 0))),
        predicted_iou=(
            None if optional["predicted_iou"] is None else float(optional["predicted_iou"])
        ),
        stability_score=(
            None if optional["stability_score"] is None else float(optional["stability_score"])
        ),
        point_coords=tuple((float(x), float(y)) for x, y in raw.get("point_coords", ())),
        crop_box=None if raw.get("crop_box") is None else _box(raw["crop_box"]),
    )


def load_sa1b(
    json_path: str | os.PathLike, image_path: str | os.PathLike | None = None
) -> Sa1bImage:
    """Read one SA-1B annotation JSON.

    Args:
        json_path: the ``sa_N.json`` file.
        image_path: the image; defaults to ``image.file_name`` next to the JSON.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"SA-1B annotation file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse SA-1B JSON {json_path}: {err}") from err
    if not isinstance(data, dict) or "image" not in data or "annotations" not in data:
        raise ValueError(f"{json_path}: SA-1B JSON needs 'image' and 'annotations'")
    info = data["image"]
    try:
        size = (int(info["height"]), int(info["width"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{json_path}: 'image' needs integer 'height' and 'width'") from err
    file_name = str(info.get("file_name", json_path.with_suffix(".jpg").name))
    where = str(json_path)
    return Sa1bImage(
        image_id=int(info.get("image_id", -1)),
        file_name=file_name,
        height=size[0],
        width=size[1],
        image_path=Path(image_path) if image_path is not None else json_path.parent / file_name,
        annotations=tuple(_parse_annotation(a, size, where) for a in data["annotations"]),
        source=where,
    )


def iter_sa1b_folder(folder: str | os.PathLike) -> Iterator[Sa1bImage]:
    """Every ``*.json`` of an SA-1B folder (sorted), each with the image it names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SA-1B folder not found: {folder}")
    json_paths = sorted(folder.glob("*.json"))
    if not json_paths:
        raise ValueError(f"no SA-1B annotation JSON files in {folder}")
    for path in json_paths:
        yield load_sa1b(path)
