"""The `mask_prompt` graph: a binary mask prompt turned directly into an output.

masklet's `SAM2Model.use_mask_as_output`, used when a mask is the prompt and the model
has ``use_mask_input_as_output_without_sam``: +-10 logits from the mask, and the object
pointer from a decoder pass on the downsampled mask.
"""

from __future__ import annotations

import torch
from torch import nn

from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.spec import GraphSpec, TensorSpec, randn


class MaskPromptGraph(nn.Module):
    """`SAM2Model.use_mask_as_output` with its outputs unpacked."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_0: torch.Tensor,
        high_res_1: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """image_embed [B, C, H, W] raw frame features; mask [B, 1, S, S] binary 0/1
        -> low_res_masks [B, 1, 4H, 4W], obj_ptr [B, C], object_score_logits [B, 1],
        ious [B, 1]."""
        out = self.model.use_mask_as_output(image_embed, [high_res_0, high_res_1], mask)
        return out.low_res_masks, out.obj_ptr, out.object_score_logits, out.ious


def mask_prompt_spec(model: SAM2Model) -> GraphSpec:
    s, h, c = model.image_size, model.config.feat_size, model.hidden_dim
    low = 4 * h

    def make_inputs(dims: dict[str, int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """dims: "B" objects; the mask is a random blob, all-zero for the last object when
        there are 2+ (an absent object takes another branch of the graph)."""
        b = dims["B"]
        mask = (torch.nn.functional.avg_pool2d(randn(gen, b, 1, s, s), 9, 1, 4) > 0.05)
        mask = mask.float()
        if b > 1:
            mask[-1] = 0
        return (randn(gen, b, c, h, h), randn(gen, b, c // 8, low, low),
                randn(gen, b, c // 4, 2 * h, 2 * h), mask)

    return GraphSpec(
        name="mask_prompt",
        module=MaskPromptGraph(model),
        inputs=(
            TensorSpec("image_embed", "float32", ("B", c, h, h)),
            TensorSpec("high_res_0", "float32", ("B", c // 8, low, low)),
            TensorSpec("high_res_1", "float32", ("B", c // 4, 2 * h, 2 * h)),
            TensorSpec("mask", "float32", ("B", 1, s, s)),
        ),
        outputs=(
            TensorSpec("low_res_masks", "float32", ("B", 1, low, low)),
            TensorSpec("obj_ptr", "float32", ("B", c)),
            TensorSpec("object_score_logits", "float32", ("B", 1)),
            TensorSpec("ious", "float32", ("B", 1)),
        ),
        make_inputs=make_inputs,
    )
