"""`OnnxImagePredictor`: masklet's `ImagePredictor` on exported ONNX graphs, without torch.

Same methods, arguments and return shapes as masklet.predictor.image.ImagePredictor
(``set_image`` / ``predict``): the image encoder graph embeds the image once, then each
``predict`` runs only the `decoder` graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masklet_runtime.errors import ExportError
from masklet_runtime.graphs import Graphs, load_graphs
from masklet_runtime.image_input import load_image, preprocess_image
from masklet_runtime.postprocess import resize_bilinear, small_component_mask
from masklet_runtime.prompts import (
    BOX_LABELS,
    PromptError,
    check_box,
    check_in_frame,
    check_points,
    to_model_coords,
)

# Decoder outputs before the video path's no-object fill: the image predictor shows those.
_RAW = {True: ("multi_masks_raw", "multi_ious"), False: ("single_mask_raw", "single_iou")}


@dataclass
class _Embedded:
    """What `set_image` computed: features [1, ...] and the original (H, W)."""

    image_embed: np.ndarray  # [1, C, H, W], with no_mem_embed added when the model does
    high_res_0: np.ndarray  # [1, 32, 4H, 4W]
    high_res_1: np.ndarray  # [1, 64, 2H, 2W]
    orig_hw: tuple[int, int]


class OnnxImagePredictor:
    """Promptable segmentation of still images from a `masklet export` folder.

    Args:
        export_dir: the export folder, or already loaded `Graphs`.
        mask_threshold: logit above which a pixel is foreground.
        max_hole_area / max_sprinkle_area: fill background holes / remove foreground
            specks up to this many low-res pixels; 0 disables (the default).
        providers / intra_op_threads: passed to `load_graphs`.
    """

    def __init__(self, export_dir: str | Path | Graphs, *, mask_threshold: float = 0.0,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0,
                 providers: list | None = None, intra_op_threads: int | None = None) -> None:
        self.graphs = (export_dir if isinstance(export_dir, Graphs)
                       else load_graphs(export_dir, providers, intra_op_threads))
        for name in ("image_encoder", "decoder"):
            if name not in self.graphs:
                raise ExportError(f"{self.graphs.root}: the export has no {name!r} graph")
        outs = {o.name for o in self.graphs.sessions["decoder"].get_outputs()}
        missing = sorted({n for pair in _RAW.values() for n in pair} - outs)
        if missing:
            raise ExportError(f"{self.graphs.root}: decoder graph lacks outputs {missing} "
                              "(export again with this masklet version)")
        s = self.graphs.settings
        self.image_size = int(s["image_size"])
        self.low_res_size = int(s.get("low_res_size", 4 * int(s["feat_size"])))
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self._state: _Embedded | None = None

    # ------------------------------------------------------------ embedding
    def set_image(self, image) -> None:
        """Embed one image: numpy HxWx3 uint8 RGB, a PIL image, or a path to an image file."""
        rgb = load_image(image)
        self.reset_predictor()
        s = self.graphs.settings
        x = preprocess_image(rgb, self.image_size, s["image_mean"], s["image_std"])
        out = self.graphs.run("image_encoder", image=x)
        embed = out["image_embed"]
        if s.get("directly_add_no_mem_embed", True):
            embed = embed + self.graphs.constants["no_mem_embed"].reshape(1, -1, 1, 1)
        self._state = _Embedded(embed, out["high_res_0"], out["high_res_1"],
                                (int(rgb.shape[0]), int(rgb.shape[1])))

    def reset_predictor(self) -> None:
        """Forget the current image and its embedding."""
        self._state = None

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    def get_image_embedding(self) -> np.ndarray:
        """[1, C, H, W] embedding of the current image."""
        return self._require_state().image_embed

    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image as it was given."""
        return self._require_state().orig_hw

    def _require_state(self) -> _Embedded:
        if self._state is None:
            raise RuntimeError("no image is set: call set_image(...) first")
        return self._state

    # ------------------------------------------------------------ prediction
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt (or a batch of B prompts) on the image set with `set_image`.

        Args:
            point_coords: [N, 2] (x, y) in original-image pixels when ``normalize_coords``
                (else [0, 1] units), or [B, N, 2]. point_labels: [N] or [B, N], 1 / 0.
            box: [4] or [B, 4] (x0, y0, x1, y1), same units; it becomes two corner points
                (labels 2, 3) placed before the clicks, as in SAM.
            mask_input: [1, 4H, 4W] or [B, 1, 4H, 4W] low-res logits from a previous call.
        Returns:
            masks [C, H, W] (bool, or logits with ``return_logits``) at the original size,
            IoU predictions [C] and low-res logits [C, 4H, 4W] clamped to [-32, 32]; with
            B > 1 prompts each gains a leading B axis. C is 3 with multimask output, else 1.
        """
        state = self._require_state()
        coords, labels = self._prompt_points(point_coords, point_labels, box, normalize_coords)
        batch = coords.shape[0]
        mask = self._mask_input(mask_input, batch)
        tile = lambda a: np.repeat(a, batch, axis=0)  # noqa: E731
        out = self.graphs.run(
            "decoder", image_embed=tile(state.image_embed), high_res_0=tile(state.high_res_0),
            high_res_1=tile(state.high_res_1), point_coords=coords, point_labels=labels,
            mask_input=mask, has_mask_input=np.array([0.0 if mask_input is None else 1.0]),
        )
        mask_name, iou_name = _RAW[bool(multimask_output)]
        low, ious = out[mask_name], out[iou_name]
        masks = resize_bilinear(self._clean(low), state.orig_hw)
        if not return_logits:
            masks = masks > self.mask_threshold
        first = (lambda a: a[0]) if batch == 1 else (lambda a: a)  # noqa: E731
        return first(masks), first(ious), first(np.clip(low, -32.0, 32.0))

    def _prompt_points(self, coords, labels, box, normalize: bool):
        """Model-space clicks [B, N, 2] float32 and labels [B, N] int64, box corners first."""
        hw = self._require_state().orig_hw
        parts_xy, parts_lab = [], []
        if box is not None:
            b = check_box(box)
            check_in_frame(b.reshape(-1, 2, 2), hw, not normalize, "box corner")
            corners = to_model_coords(b.reshape(-1, 2, 2), hw, self.image_size, normalize)
            parts_xy.append(corners)
            parts_lab.append(np.tile(np.array([BOX_LABELS], dtype=np.int64), (len(corners), 1)))
        if coords is not None or labels is not None:
            pts, lab = check_points(coords, labels)
            check_in_frame(pts, hw, not normalize, "point")
            xy = to_model_coords(pts, hw, self.image_size, normalize)
            parts_xy.append(xy[None] if xy.ndim == 2 else xy)
            parts_lab.append(lab[None] if lab.ndim == 1 else lab)
        if not parts_xy:
            raise PromptError("give points (with labels) or a box: the ONNX image predictor "
                              "needs at least one")
        if len({p.shape[0] for p in parts_xy}) > 1:
            raise PromptError(f"box batch {parts_xy[0].shape[0]} and point batch "
                              f"{parts_xy[1].shape[0]} differ")
        return np.concatenate(parts_xy, axis=1), np.concatenate(parts_lab, axis=1)

    def _mask_input(self, mask_input, batch: int) -> np.ndarray:
        """[B, 1, 4H, 4W] float32 mask prompt (zeros when absent; the graph then ignores it)."""
        size = self.low_res_size
        if mask_input is None:
            return np.zeros((batch, 1, size, size), dtype=np.float32)
        m = np.asarray(mask_input, dtype=np.float32)
        m = m[None] if m.ndim == 3 else m
        if m.ndim != 4 or m.shape[1:] != (1, size, size):
            raise PromptError(f"mask_input must have shape [1, {size}, {size}] (low-res logits "
                              f"from a previous predict), got {tuple(np.shape(mask_input))}")
        if m.shape[0] != batch:
            raise PromptError(f"mask_input has {m.shape[0]} masks for {batch} prompts")
        if not np.all(np.isfinite(m)):
            raise PromptError("mask_input contains NaN or infinite values")
        return m

    def _clean(self, low: np.ndarray) -> np.ndarray:
        """masklet.postprocess.clean_masks: holes and specks found on the input masks."""
        if self.max_hole_area <= 0 and self.max_sprinkle_area <= 0:
            return low
        t = self.mask_threshold
        out = np.array(low, dtype=np.float32, copy=True)
        for idx in np.ndindex(*low.shape[:2]):
            if self.max_hole_area > 0:
                out[idx][small_component_mask(low[idx] <= t, self.max_hole_area)] = t + 10.0
            if self.max_sprinkle_area > 0:
                out[idx][small_component_mask(low[idx] > t, self.max_sprinkle_area)] = t - 10.0
        return out
