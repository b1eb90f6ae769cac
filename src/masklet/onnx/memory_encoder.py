"""The `memory_encoder` graph: a new memory from a frame's features and mask logits.

masklet's `encode_memory` without the bf16 storage cast (the runtime rounds memories to
bf16 precision itself). The mask logits may come at any resolution: the graph resizes
them to the model's input size S (bilinear, align_corners=False, as masklet upsamples a
decoder's low-res logits); at S already the resize is the identity, which is how a mask
prompt's own +-10 logits are encoded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.onnx.memory_attention import memory_tokens_per_frame
from masklet.onnx.spec import GraphSpec, TensorSpec, flag, randn
from masklet.tracking.step import encode_memory


class MemoryEncoderGraph(nn.Module):
    """`encode_memory` (float32) with the memory flattened sequence-style per object."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: torch.Tensor,
    ) -> torch.Tensor:
        """image_embed [B, C, H, W] raw frame features; mask_logits [B, 1, h, w];
        object_score_logits [B, 1]; is_mask_from_pts [1] 0/1 -> [B, Tm, mem_dim]."""
        size = self.model.image_size
        high = F.interpolate(mask_logits, size=(size, size), mode="bilinear",
                             align_corners=False)
        # encode_memory reads only the lowest-resolution map of the features.
        feats = ImageFeatures(image_embed, [], image_embed)
        memory = encode_memory(self.model, feats, high, object_score_logits, is_mask_from_pts,
                               dtype=None)
        if memory.dim() == 4:  # SAM 2: a [B, mem, H, W] map -> [B, HW, mem]
            memory = memory.flatten(2).transpose(1, 2)
        return memory


def memory_encoder_spec(model: SAM2Model) -> GraphSpec:
    h, c, mem = model.config.feat_size, model.hidden_dim, model.mem_dim

    def make_inputs(dims: dict[str, int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """dims: "B" objects, "R" the mask side as a multiple of H (4: low-res logits,
        16: at the model's input size); object scores of both signs."""
        b, side = dims["B"], dims.get("R", 4) * h
        scores = randn(gen, b, 1)
        scores[0] = abs(scores[0]) + 0.1
        if b > 1:
            scores[-1] = -abs(scores[-1]) - 0.1
        return (randn(gen, b, c, h, h), randn(gen, b, 1, side, side) * 8, scores,
                flag(dims.get("FROM_PTS", 1)))

    return GraphSpec(
        name="memory_encoder",
        module=MemoryEncoderGraph(model),
        inputs=(
            TensorSpec("image_embed", "float32", ("B", c, h, h)),
            TensorSpec("mask_logits", "float32", ("B", 1, "h", "w")),
            TensorSpec("object_score_logits", "float32", ("B", 1)),
            TensorSpec("is_mask_from_pts", "float32", (1,)),
        ),
        outputs=(
            TensorSpec("maskmem_features", "float32", ("B", memory_tokens_per_frame(model), mem)),
        ),
        make_inputs=make_inputs,
    )
