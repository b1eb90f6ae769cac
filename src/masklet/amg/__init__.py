"""Automatic mask generation helpers: point grids, crops, mask filtering, RLE and box NMS."""

# The single-category `nms` stays in masklet.amg.nms: exporting it here would shadow
# the submodule of the same name.
from masklet.amg.generator import OUTPUT_MODES, AutomaticMaskGenerator
from masklet.amg.nms import batched_nms, box_area, box_iou
from masklet.amg.rle import decode_coco_rle, encode_coco_rle
from masklet.amg.utils import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

__all__ = [
    "AutomaticMaskGenerator",
    "MaskData",
    "OUTPUT_MODES",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "batched_nms",
    "box_area",
    "box_iou",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "decode_coco_rle",
    "encode_coco_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
