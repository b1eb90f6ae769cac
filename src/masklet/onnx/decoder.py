"""The `decoder` graph: prompt encoder + mask decoder, both output modes in one graph.

The runtime chooses multimask or single-mask output per call (masklet's
`SAM2Model.use_multimask`), so the graph returns both, from one pass of the two-way
transformer and the upscaling (`MaskDecoder.forward_both`).

Points always get masklet's trailing padding point (prompt encoder without a box), as in
the video path and `ImagePredictor`, which pass a box as two points labelled 2 and 3.
The graph needs N >= 1: a prompt with no point at all is one padding point (label -1),
which is what masklet's tracker does; `ImagePredictor` with a mask input alone (no point
and no box) has no equivalent here.
"""

from __future__ import annotations

import torch
from torch import nn

from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.spec import GraphSpec, TensorSpec, flag, randn


class DecoderGraph(nn.Module):
    """`SAM2Model.forward_sam_heads` on padded points and an optional mask prompt."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_0: torch.Tensor,
        high_res_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Decode B prompts; shapes in `decoder_spec`.

        ``has_mask_input`` [1] (0 or 1) selects the dense embedding of ``mask_input``
        [B, 1, 4H, 4W] or the no-mask embedding: x * 1 + y * 0 is exactly x, so the
        blend equals masklet's branch.
        """
        model = self.model
        encoder = model.sam_prompt_encoder
        sparse, no_mask = encoder(points=(point_coords, point_labels), boxes=None, masks=None)
        _, with_mask = encoder(points=None, boxes=None, masks=mask_input)
        dense = has_mask_input * with_mask + (1 - has_mask_input) * no_mask
        high = [high_res_0, high_res_1]
        dec_multi, dec_single = model.sam_mask_decoder.forward_both(
            image_embed, encoder.get_dense_pe(), sparse, dense, high)
        multi = model._select_output(dec_multi, True)
        single = model._select_output(dec_single, False)
        best = torch.argmax(multi.ious, dim=-1)
        return (multi.low_res_multimasks, multi.ious, best, multi.obj_ptr,
                single.low_res_masks, single.ious, single.obj_ptr, single.object_score_logits,
                dec_multi.masks, dec_single.masks)


def decoder_spec(model: SAM2Model) -> GraphSpec:
    s, h, c = model.image_size, model.config.feat_size, model.hidden_dim
    low = 4 * h

    def make_inputs(dims: dict[str, int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """dims: "B" prompts, "N" points each (random labels -1..3, coordinates in S)."""
        b, n = dims["B"], dims["N"]
        coords = torch.rand(b, n, 2, generator=gen) * s
        labels = torch.randint(-1, 4, (b, n), generator=gen)
        has_mask = float(dims.get("MASK", 1))
        return (randn(gen, b, c, h, h), randn(gen, b, c // 8, low, low),
                randn(gen, b, c // 4, 2 * h, 2 * h), coords, labels,
                randn(gen, b, 1, low, low) * 5, flag(has_mask))

    return GraphSpec(
        name="decoder",
        module=DecoderGraph(model),
        inputs=(
            TensorSpec("image_embed", "float32", ("B", c, h, h)),
            TensorSpec("high_res_0", "float32", ("B", c // 8, low, low)),
            TensorSpec("high_res_1", "float32", ("B", c // 4, 2 * h, 2 * h)),
            TensorSpec("point_coords", "float32", ("B", "N", 2)),
            TensorSpec("point_labels", "int64", ("B", "N")),
            TensorSpec("mask_input", "float32", ("B", 1, low, low)),
            TensorSpec("has_mask_input", "float32", (1,)),
        ),
        outputs=(
            TensorSpec("multi_masks", "float32", ("B", 3, low, low)),
            TensorSpec("multi_ious", "float32", ("B", 3)),
            TensorSpec("multi_best", "int64", ("B",)),
            TensorSpec("multi_obj_ptr", "float32", ("B", c)),
            TensorSpec("single_mask", "float32", ("B", 1, low, low)),
            TensorSpec("single_iou", "float32", ("B", 1)),
            TensorSpec("single_obj_ptr", "float32", ("B", c)),
            TensorSpec("object_score_logits", "float32", ("B", 1)),
            # The decoder's masks before absent objects are set to -1024: what masklet's
            # ImagePredictor returns (it does not apply the object score to its masks).
            TensorSpec("multi_masks_raw", "float32", ("B", 3, low, low)),
            TensorSpec("single_mask_raw", "float32", ("B", 1, low, low)),
        ),
        make_inputs=make_inputs,
    )
