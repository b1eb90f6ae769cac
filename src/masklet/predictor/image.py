"""`ImagePredictor`: embed an image once, then answer many prompts quickly.

The method names, arguments and return shapes follow the official
`SAM2ImagePredictor`, so code written for it runs unchanged. The predictor wraps
a `SAM2Model`; it never subclasses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from masklet.io.images import load_image
from masklet.io.preprocess import preprocess_image
from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.postprocess import clean_masks
from masklet.predictor.prompts import (
    PromptError,
    check_box,
    check_in_frame,
    check_points,
    merge_box_and_points,
    to_model_coords,
)


@dataclass
class _EmbeddedImages:
    """What `set_image` / `set_image_batch` computed. features: batch of len(orig_hw)."""

    features: ImageFeatures
    orig_hw: list[tuple[int, int]]
    is_batch: bool


class ImagePredictor:
    """Promptable segmentation of still images.

    Args:
        model: a `SAM2Model` (see `masklet.build_model`).
        mask_threshold: logit above which a pixel is foreground.
        max_hole_area: fill background holes up to this area (pixels of the 256x256
            low-res mask) before upsampling; 0 disables (official default).
        max_sprinkle_area: remove foreground specks up to this area; 0 disables.
    """

    def __init__(
        self,
        model: SAM2Model,
        *,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        self.model = model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self._state: _EmbeddedImages | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------ embedding
    @torch.inference_mode()
    def set_image(self, image) -> None:
        """Embed one image: numpy HxWx3 uint8 RGB, a PIL image, or a path to an image file."""
        rgb = load_image(image)
        self._state = self._embed([rgb], is_batch=False)

    @torch.inference_mode()
    def set_image_batch(self, images: list) -> None:
        """Embed several images (each as accepted by `set_image`) in one batch."""
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("set_image_batch expects a non-empty list of images")
        self._state = self._embed([load_image(im) for im in images], is_batch=True)

    def _embed(self, rgbs: list[np.ndarray], is_batch: bool) -> _EmbeddedImages:
        self.reset_predictor()
        size = self.model.image_size
        batch = torch.stack([preprocess_image(rgb, size) for rgb in rgbs]).to(self.device)
        feats = self.model.add_no_mem_embed(self.model.forward_image(batch))
        return _EmbeddedImages(feats, [tuple(rgb.shape[:2]) for rgb in rgbs], is_batch)

    def reset_predictor(self) -> None:
        """Forget the current image(s) and their embeddings."""
        self._state = None

    def get_image_embedding(self) -> torch.Tensor:
        """[B, 256, 64, 64] embedding of the current image(s)."""
        return self._require_state().features.image_embed

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    def original_size(self, img_idx: int = 0) -> tuple[int, int]:
        """(H, W) of image ``img_idx`` as it was given."""
        return self._require_state().orig_hw[img_idx]

    def _require_state(self) -> _EmbeddedImages:
        if self._state is None:
            raise RuntimeError("no image is set: call set_image(...) or set_image_batch(...) first")
        return self._state

    # ------------------------------------------------------------ prediction
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt (or a batch of prompts) on the image set with `set_image`.

        Args:
            point_coords: [N, 2] (x, y) clicks, in pixels of the original image when
                ``normalize_coords`` (else in [0, 1] units); [B, N, 2] for B prompts.
            point_labels: [N] (or [B, N]) labels: 1 positive, 0 negative.
            box: [4] (or [B, 4]) box x0, y0, x1, y1 in the same units.
            mask_input: [1, 256, 256] (or [B, 1, 256, 256]) low-res logits from a previous call.
            multimask_output: return 3 candidate masks instead of 1.
            return_logits: return logits instead of boolean masks.
        Returns:
            masks [C, H, W] (or [B, C, H, W]) at the original size, IoU predictions [C]
            (or [B, C]) and low-res logits [C, 256, 256] (or [B, C, 256, 256]), as numpy;
            C is 3 with multimask output, else 1.
        """
        state = self._require_state()
        if state.is_batch:
            raise RuntimeError("an image batch is set: use predict_batch(...)")
        masks, ious, low = self._predict_numpy(
            0, point_coords, point_labels, box, mask_input,
            multimask_output, return_logits, normalize_coords,
        )
        return masks, ious, low

    def predict_batch(
        self,
        point_coords_batch=None,
        point_labels_batch=None,
        box_batch=None,
        mask_input_batch=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """`predict` for each image of `set_image_batch`; each argument is a per-image list."""
        state = self._require_state()
        if not state.is_batch:
            raise RuntimeError("a single image is set: use predict(...)")
        n = len(state.orig_hw)
        for name, value in (("point_coords_batch", point_coords_batch),
                            ("point_labels_batch", point_labels_batch),
                            ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
            if value is not None and len(value) != n:
                raise PromptError(f"{name} has {len(value)} entries for {n} images")
        pick = lambda seq, i: None if seq is None else seq[i]  # noqa: E731
        results = [
            self._predict_numpy(
                i, pick(point_coords_batch, i), pick(point_labels_batch, i), pick(box_batch, i),
                pick(mask_input_batch, i), multimask_output, return_logits, normalize_coords,
            )
            for i in range(n)
        ]
        masks, ious, lows = zip(*results)
        return list(masks), list(ious), list(lows)

    def _predict_numpy(self, img_idx, coords, labels, box, mask_input,
                       multimask_output, return_logits, normalize_coords):
        points, box_xy, mask_t = self.prepare_prompts(
            coords, labels, box, mask_input, normalize_coords, img_idx
        )
        masks, ious, low = self.predict_torch(
            points, box_xy, mask_t, multimask_output, return_logits, img_idx
        )
        to_np = lambda t: t.squeeze(0).float().cpu().numpy()  # noqa: E731
        return to_np(masks), to_np(ious), to_np(low)

    def prepare_prompts(self, coords, labels, box, mask_input, normalize_coords, img_idx=0):
        """Validate user prompts and convert them to model-space tensors.

        Returns:
            points (coords [B, N, 2], labels [B, N]) or None; box corners [B, 2, 2] or
            None; mask logits [B, 1, 256, 256] or None. Coordinates are in model pixels.
        """
        hw = self.original_size(img_idx)
        size, dev = self.model.image_size, self.device
        points = box_xy = mask_t = None
        if coords is not None or labels is not None:
            pts, lab = check_points(coords, labels)
            check_in_frame(pts, hw, not normalize_coords, "point")
            xy = to_model_coords(torch.as_tensor(pts, dtype=torch.float32, device=dev),
                                 hw, size, normalize_coords)
            lab_t = torch.as_tensor(lab, dtype=torch.int32, device=dev)
            points = (xy[None], lab_t[None]) if xy.ndim == 2 else (xy, lab_t)
        if box is not None:
            b = check_box(box)
            check_in_frame(b.reshape(-1, 2, 2), hw, not normalize_coords, "box corner")
            corners = torch.as_tensor(b, dtype=torch.float32, device=dev).reshape(-1, 2, 2)
            box_xy = to_model_coords(corners, hw, size, normalize_coords)
        if mask_input is not None:
            mask_t = self._check_mask_input(mask_input)
        return points, box_xy, mask_t

    def _check_mask_input(self, mask_input) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32, device=self.device)
        t = t[None] if t.ndim == 3 else t
        expected = tuple(self.model.sam_prompt_encoder.mask_input_size)
        if t.ndim != 4 or t.shape[1] != 1 or tuple(t.shape[-2:]) != expected:
            raise PromptError(
                f"mask_input must have shape [1, {expected[0]}, {expected[1]}] (low-res logits "
                f"from a previous predict), got {tuple(np.shape(mask_input))}"
            )
        return t

    @torch.inference_mode()
    def predict_torch(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        box_xy: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode B prompts already in model space (see `prepare_prompts`).

        Returns:
            masks [B, C, H, W] (bool, or logits) at the original size, IoU [B, C],
            low-res logits [B, C, 256, 256] clamped to [-32, 32].
        """
        state = self._require_state()
        feats = state.features.select(img_idx)
        prompt = merge_box_and_points(box_xy, points)
        sparse, dense = self.model.sam_prompt_encoder(points=prompt, boxes=None, masks=mask_input)
        many = prompt is not None and prompt[0].shape[0] > 1
        dec = self.model.sam_mask_decoder(
            image_embeddings=feats.image_embed,
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=many,
            high_res_features=feats.high_res_feats or None,
        )
        low = dec.masks.float()
        cleaned = clean_masks(low, self.max_hole_area, self.max_sprinkle_area, self.mask_threshold)
        masks = F.interpolate(cleaned, state.orig_hw[img_idx], mode="bilinear", align_corners=False)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, dec.iou_pred, low.clamp(-32.0, 32.0)
