"""Mask outputs: indexed-palette PNGs (DAVIS / YouTube-VOS layout) and COCO / SA-V JSON.

Masks are accepted per frame as either a mapping ``{object_id: mask}`` (each
mask [H, W] or [1, H, W], bool, 0/1 or logits: ``> 0`` is foreground; numpy or
torch) or an integer label map [H, W] (0 = background, k = object k). Where
objects overlap, the smaller id wins, as in SAM 2's VOS tools.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from masklet.amg.rle import decode_coco_rle, encode_coco_rle
from masklet.export.atomic import atomic_dir, atomic_write

__all__ = [
    "FrameMasks",
    "davis_palette",
    "to_numpy_mask",
    "label_map_from_masks",
    "masks_from_label_map",
    "write_palette_png",
    "read_palette_png",
    "write_davis_sequence",
    "read_davis_sequence",
    "coco_annotation",
    "image_masks_to_coco",
    "video_masks_to_coco",
    "video_masks_to_sav",
    "write_json",
    "decode_coco_rle",
    "encode_coco_rle",
]

ArrayLike = np.ndarray | torch.Tensor
FrameMasks = Mapping[int, ArrayLike] | ArrayLike
PathLike = str | os.PathLike


@functools.cache
def _palette_bytes() -> bytes:
    colors = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code = index
        # Bits 0/1/2 of the index go to R/G/B, most significant colour bit first,
        # then the next three index bits fill the next colour bit down, and so on.
        for bit in range(7, -1, -1):
            for channel in range(3):
                colors[index, channel] |= ((code >> channel) & 1) << bit
            code >>= 3
    return colors.tobytes()


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: [256, 3] uint8, index 0 black, 1 (128, 0, 0), ..."""
    return np.frombuffer(_palette_bytes(), dtype=np.uint8).reshape(256, 3).copy()


def _as_numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def to_numpy_mask(mask: ArrayLike) -> np.ndarray:
    """One mask ([H, W] or [1, H, W], bool / numeric / logits) -> [H, W] bool numpy."""
    if isinstance(mask, torch.Tensor):
        # Threshold on the tensor's device: smaller transfer, and bfloat16 has no numpy type.
        mask = mask.detach()
        mask = (mask if mask.dtype == torch.bool else mask > 0).cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"expected a [H, W] or [1, H, W] mask, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask > 0


def _check_label_map(labels: np.ndarray, dtype: type) -> np.ndarray:
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"a label map must be a 2-D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(dtype).max):
        raise ValueError(f"label values do not fit a {np.dtype(dtype).name} label map")
    return labels.astype(dtype, copy=False)


def label_map_from_masks(masks: FrameMasks, *, dtype: type = np.uint8) -> np.ndarray:
    """Merge one frame's object masks into a label map [H, W] of `dtype` (0 = background).

    Object ids must be positive and fit `dtype`; an integer label map passes through.
    """
    if not isinstance(masks, Mapping):
        return _check_label_map(_as_numpy(masks), dtype)
    if not masks:
        raise ValueError("cannot infer the frame size from an empty mapping")
    limit = np.iinfo(dtype).max
    out = None
    # Paint larger ids first so smaller ids end up on top.
    for obj_id in sorted(masks, reverse=True):
        if not 0 < obj_id <= limit:
            raise ValueError(f"object id {obj_id} does not fit a {np.dtype(dtype).name} label map")
        mask = to_numpy_mask(masks[obj_id])
        if out is None:
            out = np.zeros(mask.shape, dtype=dtype)
        out[mask] = obj_id
    return out


def masks_from_label_map(labels: ArrayLike) -> dict[int, np.ndarray]:
    """Split a label map [H, W] into ``{object_id: [H, W] bool}`` (ids in increasing order)."""
    labels = _as_numpy(labels)
    return {int(k): labels == k for k in np.unique(labels) if k != 0}


def write_palette_png(
    path: PathLike, masks: FrameMasks, *, palette: np.ndarray | None = None
) -> None:
    """Write one frame as an 8-bit indexed PNG (index = object id), atomically."""
    # putpalette turns the 8-bit greyscale image into a palette ("P") image.
    image = Image.fromarray(label_map_from_masks(masks))
    colors = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    image.putpalette(colors.reshape(-1).tolist())
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def read_palette_png(path: PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an indexed PNG: (label map [H, W] uint8, palette [N, 3] uint8 or None)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path} is a {image.mode} image, not an indexed mask")
        labels = np.array(image)
        palette = image.getpalette()
    colors = None if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return labels, colors


def _frame_name(key: int | str) -> str:
    return f"{key:05d}" if isinstance(key, (int, np.integer)) else str(key)


def write_davis_sequence(
    out_dir: PathLike,
    sequence: str,
    frames: Mapping[int | str, FrameMasks],
    *,
    palette: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<out_dir>/<sequence>/<frame>.png`` for every frame, as one atomic folder.

    Args:
        frames: frame index (written ``00000``) or frame name (YouTube-VOS keeps
            the source names) -> that frame's masks.
        overwrite: replace an existing non-empty sequence folder.
    Returns:
        the sequence folder.
    """
    target = Path(out_dir) / sequence
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for key, masks in frames.items():
            write_palette_png(tmp / f"{_frame_name(key)}.png", masks, palette=palette)
    return target


def read_davis_sequence(seq_dir: PathLike) -> dict[str, np.ndarray]:
    """Read every ``*.png`` of a sequence folder: {frame name: label map [H, W] uint8}."""
    return {p.stem: read_palette_png(p)[0] for p in sorted(Path(seq_dir).glob("*.png"))}


def coco_annotation(mask: ArrayLike, **fields: Any) -> dict[str, Any]:
    """A COCO annotation for one mask: segmentation RLE, area, bbox (XYWH), iscrowd=0.

    `fields` (e.g. id, image_id, category_id, score, track_id) are added as given.
    """
    rle = encode_coco_rle(to_numpy_mask(mask))
    return {
        **fields,
        "segmentation": rle,
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }


def _categories(category_ids: Iterable[int]) -> list[dict[str, Any]]:
    return [{"id": int(c), "name": f"object_{c}"} for c in sorted(set(category_ids))]


def image_masks_to_coco(
    images: Sequence[Mapping[str, Any]],
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """COCO instance-segmentation JSON for a set of images.

    Args:
        images: one dict per image with ``file_name``, ``masks`` ([N, H, W] or a
            list of [H, W]), and optionally ``scores`` [N], ``category_ids`` [N]
            (default 1) and ``height`` / ``width`` (needed when there is no mask).
        categories: COCO categories; by default one ``object_<id>`` per id used.
    """
    out_images, annotations, used = [], [], set()
    for image_id, entry in enumerate(images, start=1):
        masks = [to_numpy_mask(m) for m in entry["masks"]]
        if masks:
            height, width = masks[0].shape
        elif "height" in entry and "width" in entry:
            height, width = int(entry["height"]), int(entry["width"])
        else:
            raise ValueError(f"{entry['file_name']}: no masks, and no height / width given")
        out_images.append(
            {"id": image_id, "file_name": entry["file_name"], "height": height, "width": width}
        )
        scores = entry.get("scores")
        cats = entry.get("category_ids")
        cats = [1] * len(masks) if cats is None else cats
        for i, mask in enumerate(masks):
            fields = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cats[i])}
            if scores is not None:
                fields["score"] = float(scores[i])
            annotations.append(coco_annotation(mask, **fields))
            used.add(int(cats[i]))
    cats_out = [dict(c) for c in categories] if categories is not None else _categories(used)
    return {"images": out_images, "annotations": annotations, "categories": cats_out}


def _frames_as_masks(frames: Sequence[FrameMasks]) -> list[dict[int, np.ndarray]]:
    out = []
    for frame in frames:
        if isinstance(frame, Mapping):
            out.append({int(k): to_numpy_mask(v) for k, v in frame.items()})
        else:
            out.append(masks_from_label_map(frame))
    return out


def _frame_size(
    frames: list[dict[int, np.ndarray]], height: int | None, width: int | None
) -> tuple[int, int]:
    shapes = {mask.shape for frame in frames for mask in frame.values()}
    if len(shapes) > 1:
        raise ValueError(f"masks of one video must share a size, got {sorted(shapes)}")
    if shapes:
        return shapes.pop()
    if height is None or width is None:
        raise ValueError("no masks in any frame: pass height and width")
    return height, width


def video_masks_to_coco(
    video_name: str,
    frames: Sequence[FrameMasks],
    *,
    frame_names: Sequence[str] | None = None,
    category_id: int = 1,
    height: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """COCO-style video JSON: one image per frame, one annotation per visible object per frame.

    Each annotation carries ``track_id`` = the object id; empty masks are omitted.
    """
    masks = _frames_as_masks(frames)
    h, w = _frame_size(masks, height, width)
    names = frame_names or [f"{video_name}/{i:05d}.jpg" for i in range(len(masks))]
    images, annotations = [], []
    for index, (name, frame) in enumerate(zip(names, masks, strict=True)):
        image_id = index + 1
        images.append({"id": image_id, "video_id": 1, "frame_index": index,
                       "file_name": name, "height": h, "width": w})
        for obj_id, mask in sorted(frame.items()):
            if mask.any():
                fields = {"id": len(annotations) + 1, "image_id": image_id, "video_id": 1,
                          "category_id": category_id, "track_id": obj_id}
                annotations.append(coco_annotation(mask, **fields))
    return {
        "videos": [{"id": 1, "name": video_name, "height": h, "width": w, "length": len(images)}],
        "images": images,
        "annotations": annotations,
        "categories": _categories([category_id]),
    }


def video_masks_to_sav(
    video_id: str,
    frames: Sequence[FrameMasks],
    *,
    height: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """SA-V-style masklet JSON: ``masklet[frame][k]`` is the RLE of object ``masklet_id[k]``.

    As in SA-V, every object has an RLE in every frame (an empty one where absent).
    """
    masks = _frames_as_masks(frames)
    h, w = _frame_size(masks, height, width)
    ids = sorted({obj_id for frame in masks for obj_id in frame})
    empty = np.zeros((h, w), dtype=bool)
    masklet = [[encode_coco_rle(frame.get(obj_id, empty)) for obj_id in ids] for frame in masks]
    return {
        "video_id": video_id,
        "video_height": h,
        "video_width": w,
        "masklet": masklet,
        "masklet_id": ids,
        "masklet_num": len(ids),
    }


def write_json(path: PathLike, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (compact separators: RLE files get large)."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
