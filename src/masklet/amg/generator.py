"""`AutomaticMaskGenerator`: segment everything in an image by prompting SAM 2 with a point grid.

Behaviour (settings, filtering order, outputs) follows the official
`SAM2AutomaticMaskGenerator`, so the same weights give the same masks:

1. the image is split into crops (layer 0 is the whole image, layer i a 2^i x 2^i
   tiling); each crop is embedded once and prompted with one positive click per
   point of that layer's grid, in batches of ``points_per_batch``;
2. per batch: optional mask-to-mask refinement, then filtering by predicted IoU and
   by stability score, binarisation, boxes, and removal of masks that touch a crop
   edge that is not an image edge; masks are kept only as RLE from here on;
3. box NMS within each crop (by predicted IoU), then across crops (smaller crops win);
4. encoding to the requested output mode.

``min_mask_region_area`` works as in the official SAM 2 generator: it is handed to
the image predictor, which fills holes and removes specks of at most that many
pixels in the low-resolution logits before they are upsampled. (The official code
does that only on CUDA; masklet's predictor does it on every device.) The SAM 1 style
full-resolution cleanup is available as `AutomaticMaskGenerator.postprocess_small_regions`;
like the official one, `generate` does not call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from masklet.amg.nms import batched_nms, box_area
from masklet.amg.utils import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
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
from masklet.io.images import load_image
from masklet.modeling.sam2 import SAM2Model
from masklet.predictor.image import ImagePredictor
from masklet.predictor.prompts import to_model_coords

__all__ = ["OUTPUT_MODES", "AutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class AutomaticMaskGenerator:
    """Generate masks for everything in an image (the official "segment everything" mode).

    Args:
        model: a `SAM2Model` (see `masklet.build_model`).
        points_per_side: grid of points_per_side x points_per_side clicks on the whole
            image; exclusive with `point_grids`.
        points_per_batch: clicks decoded together (memory grows with it: each click
            yields up to 3 full-crop-size float masks).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables).
        stability_score_thresh: keep masks whose stability score is at least this (0 disables).
        stability_score_offset: logit offset used by the stability score.
        mask_threshold: logit above which a pixel is foreground.
        box_nms_thresh: box IoU above which duplicate masks of one crop are suppressed.
        crop_n_layers: extra crop layers; layer i tiles the image into 2^i x 2^i crops.
        crop_nms_thresh: box IoU above which duplicates from different crops are suppressed.
        crop_overlap_ratio: overlap of first-layer crops, as a fraction of the shorter side.
        crop_n_points_downscale_factor: layer i uses points_per_side / factor^i points per side.
        point_grids: explicit grids, one [N, 2] array of (x, y) in [0, 1] per crop layer.
        min_mask_region_area: fill holes / remove specks up to this area (pixels of the
            low-resolution mask) before upsampling; 0 disables.
        output_mode: "binary_mask" ([H, W] bool arrays), "uncompressed_rle" or "coco_rle".
        use_m2m: refine each mask once by feeding its low-resolution logits back in.
        multimask_output: 3 candidate masks per click instead of 1.
    """

    def __init__(
        self,
        model: SAM2Model,
        *,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        _check_settings(
            points_per_batch=points_per_batch, crop_n_layers=crop_n_layers,
            crop_overlap_ratio=crop_overlap_ratio, box_nms_thresh=box_nms_thresh,
            crop_nms_thresh=crop_nms_thresh, min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )
        self.point_grids = _resolve_point_grids(
            points_per_side, point_grids, crop_n_layers, crop_n_points_downscale_factor
        )
        # The official generator leaves the predictor's own threshold at its default of
        # 0, so holes and specks are found at logit 0 whatever `mask_threshold` is.
        self.predictor = ImagePredictor(
            model, max_hole_area=min_mask_region_area, max_sprinkle_area=min_mask_region_area
        )
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    # ------------------------------------------------------------ public API
    @torch.inference_mode()
    def generate(self, image) -> list[dict[str, Any]]:
        """Masks for everything in `image` (HxWx3 uint8 RGB array, PIL image or path).

        Returns:
            one record per mask, in the official layout: ``segmentation`` (per
            `output_mode`), ``area`` (int pixels), ``bbox`` (XYWH floats),
            ``predicted_iou``, ``point_coords`` ([[x, y]], image pixels),
            ``stability_score`` and ``crop_box`` (XYWH floats).
        """
        data = self._generate_masks(load_image(image))
        return self._records(data)

    @staticmethod
    def postprocess_small_regions(
        mask_data: MaskData, min_area: int, nms_thresh: float
    ) -> MaskData:
        """SAM 1 style cleanup of full-resolution masks, in place (as the official helper).

        Fills holes and removes islands smaller than `min_area` pixels in every mask of
        ``mask_data["rles"]``, then reruns box NMS preferring masks that needed no change;
        only surviving changed masks get their RLE and box (``mask_data["boxes"]``) updated.
        """
        rles = mask_data["rles"]
        if len(rles) == 0:
            return mask_data
        cleaned, scores = [], []
        for rle in rles:
            mask, filled = remove_small_regions(rle_to_mask(rle), min_area, mode="holes")
            mask, pruned = remove_small_regions(mask, min_area, mode="islands")
            cleaned.append(torch.as_tensor(mask))
            # NMS score 1 for untouched masks, so they beat edited duplicates.
            scores.append(float(not (filled or pruned)))
        masks = torch.stack(cleaned)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(), torch.as_tensor(scores), torch.zeros(len(rles), dtype=torch.int64),
            iou_threshold=nms_thresh,
        )
        for i in keep.tolist():
            if scores[i] == 0.0:
                rles[i] = mask_to_rle_pytorch(masks[i : i + 1])[0]
                mask_data["boxes"][i] = boxes[i]
        mask_data.filter(keep)
        return mask_data

    # ------------------------------------------------------------ crops
    def _generate_masks(self, image: np.ndarray) -> MaskData:
        """All surviving masks of `image` [H, W, 3], as numpy fields (see `_process_crop`)."""
        orig_hw = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(
            orig_hw, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = MaskData()
        for crop_box, layer in zip(crop_boxes, layers):
            data.cat(self._process_crop(image, crop_box, layer, orig_hw))
        if len(crop_boxes) > 1:
            # A smaller crop sees its objects at a higher resolution, so its masks win.
            scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
            keep = batched_nms(
                data["boxes"].float(), scores, _one_category(data["boxes"]),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer: int, orig_hw: tuple[int, int]
    ) -> MaskData:
        """Masks from one crop, deduplicated; boxes [N, 4] and points [N, 2] in image pixels."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_hw = crop.shape[:2]
        self.predictor.set_image(crop)
        # Grids are in [0, 1] units of the crop: scale by its (W, H).
        points = self.point_grids[layer] * np.array(crop_hw[::-1])[None]
        data = MaskData()
        for (batch,) in batch_iterator(self.points_per_batch, points):
            data.cat(self._process_batch(batch, crop_hw, crop_box, orig_hw))
        self.predictor.reset_predictor()

        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"], _one_category(data["boxes"]),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        n = len(data["rles"])
        data["crop_boxes"] = torch.tensor([crop_box], device=data["boxes"].device).repeat(n, 1)
        return data

    # ------------------------------------------------------------ point batches
    def _process_batch(
        self, points: np.ndarray, crop_hw: tuple[int, int], crop_box: list[int],
        orig_hw: tuple[int, int],
    ) -> MaskData:
        """Decode clicks `points` [B, 2] (crop pixels) and keep the good masks, as RLE.

        Returns fields iou_preds [N], points [N, 2], stability_score [N], boxes [N, 4]
        (crop pixels) and rles (N full-image RLEs).
        """
        coords = torch.as_tensor(points, dtype=torch.float32, device=self.predictor.device)
        masks, ious, low_res = self._decode(coords, crop_hw, None, self.multimask_output)
        per_click = masks.shape[1]
        data = MaskData(
            masks=masks.flatten(0, 1),
            iou_preds=ious.flatten(0, 1),
            points=coords.repeat_interleave(per_click, dim=0),
        )
        del masks
        if self.use_m2m:
            self._refine_with_m2m(data, low_res.flatten(0, 1), crop_hw)
        self._filter_by_quality(data)

        data["masks"] = data["masks"] > self.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        orig_h, orig_w = orig_hw
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return data

    def _decode(
        self, coords: torch.Tensor, crop_hw: tuple[int, int], mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One positive click per prompt: coords [B, 2] in crop pixels.

        Returns:
            logits [B, C, h, w] at the crop size, IoU [B, C], low-res logits [B, C, 256, 256].
        """
        xy = to_model_coords(coords, crop_hw, self.predictor.model.image_size, normalize=True)
        labels = torch.ones(xy.shape[0], 1, dtype=torch.int32, device=xy.device)
        return self.predictor.predict_torch(
            (xy[:, None], labels), None, mask_input, multimask_output, return_logits=True
        )

    def _refine_with_m2m(
        self, data: MaskData, low_res: torch.Tensor, crop_hw: tuple[int, int]
    ) -> None:
        """Replace masks / iou_preds by a second single-mask pass prompted with each mask's
        own click plus its low-res logits `low_res` [N, 256, 256]."""
        # The first-pass masks are superseded; free them before decoding again.
        del data["masks"]
        masks, ious = [], []
        for coords, prev in batch_iterator(self.points_per_batch, data["points"], low_res):
            refined, iou, _ = self._decode(coords, crop_hw, prev[:, None], multimask_output=False)
            masks.append(refined[:, 0])
            ious.append(iou[:, 0])
        data["masks"] = torch.cat(masks)
        data["iou_preds"] = torch.cat(ious)

    def _filter_by_quality(self, data: MaskData) -> None:
        """Drop masks under the IoU / stability thresholds; adds stability_score [N]."""
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)

    # ------------------------------------------------------------ output
    def _records(self, data: MaskData) -> list[dict[str, Any]]:
        rles = data["rles"]
        if self.output_mode == "coco_rle":
            segmentations = [coco_encode_rle(rle) for rle in rles]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in rles]
        else:
            segmentations = rles
        # Whole-array conversions give the same Python floats as per-item ones.
        boxes = box_xyxy_to_xywh(data["boxes"]).tolist()
        crop_boxes = box_xyxy_to_xywh(data["crop_boxes"]).tolist()
        ious = data["iou_preds"].tolist()
        stability = data["stability_score"].tolist()
        points = data["points"].tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": area_from_rle(rles[i]),
                "bbox": boxes[i],
                "predicted_iou": ious[i],
                "point_coords": [points[i]],
                "stability_score": stability[i],
                "crop_box": crop_boxes[i],
            }
            for i in range(len(rles))
        ]


def _one_category(boxes: torch.Tensor) -> torch.Tensor:
    """All-zero NMS categories [N] for boxes [N, 4]: every mask competes with every other."""
    return torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)


def _check_settings(
    *, points_per_batch: int, crop_n_layers: int, crop_overlap_ratio: float,
    box_nms_thresh: float, crop_nms_thresh: float, min_mask_region_area: float, output_mode: str,
) -> None:
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}")
    if not isinstance(points_per_batch, int) or points_per_batch < 1:
        raise ValueError(f"points_per_batch must be a positive int, got {points_per_batch!r}")
    if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
        raise ValueError(f"crop_n_layers must be an int >= 0, got {crop_n_layers!r}")
    if not 0.0 <= crop_overlap_ratio < 1.0:
        raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio!r}")
    for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is a box IoU and must be in [0, 1], got {value!r}")
    if min_mask_region_area < 0:
        raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area!r}")


def _resolve_point_grids(
    points_per_side: int | None, point_grids: Sequence[np.ndarray] | None,
    crop_n_layers: int, downscale: int,
) -> list[np.ndarray]:
    """One [N, 2] grid of (x, y) in [0, 1] per crop layer, from exactly one of the two sources."""
    if (points_per_side is None) == (point_grids is None):
        raise ValueError("give exactly one of points_per_side and point_grids "
                         "(set points_per_side=None to use point_grids)")
    if point_grids is None:
        if not isinstance(downscale, int) or downscale < 1:
            raise ValueError(
                f"crop_n_points_downscale_factor must be an int >= 1, got {downscale!r}"
            )
        if not isinstance(points_per_side, int) or points_per_side < downscale**crop_n_layers:
            raise ValueError(
                f"points_per_side={points_per_side!r} leaves no points in crop layer "
                f"{crop_n_layers} (it must be an int >= "
                f"crop_n_points_downscale_factor ** crop_n_layers = {downscale**crop_n_layers})"
            )
        return build_all_layer_point_grids(points_per_side, crop_n_layers, downscale)
    grids = [np.asarray(grid, dtype=np.float64) for grid in point_grids]
    if len(grids) != crop_n_layers + 1:
        raise ValueError(f"point_grids has {len(grids)} grid(s); crop_n_layers={crop_n_layers} "
                         f"needs one per layer ({crop_n_layers + 1})")
    for i, grid in enumerate(grids):
        if grid.ndim != 2 or grid.shape[1] != 2 or grid.shape[0] == 0:
            raise ValueError(
                f"point_grids[{i}] must have shape [N, 2] with N >= 1, got {grid.shape}"
            )
        if grid.min() < 0.0 or grid.max() > 1.0:
            raise ValueError(f"point_grids[{i}] must hold (x, y) in [0, 1] units of the crop")
    return grids
