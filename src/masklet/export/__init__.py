"""Writing results: atomic file/folder writes, PNG / COCO / SA-V masks, overlay images
and videos."""

from masklet.export.atomic import PendingFile, atomic_dir, atomic_path, atomic_write
from masklet.export.masks import (
    coco_annotation,
    davis_palette,
    decode_coco_rle,
    encode_coco_rle,
    image_masks_to_coco,
    label_map_from_masks,
    masks_from_label_map,
    read_davis_sequence,
    read_palette_png,
    to_numpy_mask,
    video_masks_to_coco,
    video_masks_to_sav,
    write_davis_sequence,
    write_json,
    write_palette_png,
)
from masklet.export.overlay import OverlayVideoWriter, overlay_masks, write_overlay_png

__all__ = [
    "OverlayVideoWriter",
    "PendingFile",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "coco_annotation",
    "davis_palette",
    "decode_coco_rle",
    "encode_coco_rle",
    "image_masks_to_coco",
    "label_map_from_masks",
    "masks_from_label_map",
    "overlay_masks",
    "read_davis_sequence",
    "read_palette_png",
    "to_numpy_mask",
    "video_masks_to_coco",
    "video_masks_to_sav",
    "write_davis_sequence",
    "write_json",
    "write_overlay_png",
    "write_palette_png",
]
