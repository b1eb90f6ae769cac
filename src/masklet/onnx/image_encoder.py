"""The `image_encoder` graph: one preprocessed image -> the decoder's feature levels."""

from __future__ import annotations

import torch
from torch import nn

from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.spec import GraphSpec, TensorSpec, randn


class ImageEncoderGraph(nn.Module):
    """`SAM2Model.forward_image` with its `ImageFeatures` unpacked into four tensors."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        if not model.config.use_high_res_features_in_sam:
            raise ValueError(f"{model.config.name}: export needs use_high_res_features_in_sam")
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image: [1, 3, S, S] normalised -> image_embed [1, C, H, W] (raw, no no-memory
        embedding), high_res_0 [1, C/8, 4H, 4W], high_res_1 [1, C/4, 2H, 2W] (after
        conv_s0 / conv_s1), pos_enc [1, C, H, W]."""
        feats = self.model.forward_image(image)
        high_0, high_1 = feats.high_res_feats
        return feats.image_embed, high_0, high_1, feats.pos_enc


def image_encoder_spec(model: SAM2Model) -> GraphSpec:
    s, h, c = model.image_size, model.config.feat_size, model.hidden_dim

    def make_inputs(dims: dict[str, int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (randn(gen, 1, 3, s, s),)

    return GraphSpec(
        name="image_encoder",
        module=ImageEncoderGraph(model),
        inputs=(TensorSpec("image", "float32", (1, 3, s, s)),),
        outputs=(
            TensorSpec("image_embed", "float32", (1, c, h, h)),
            TensorSpec("high_res_0", "float32", (1, c // 8, 4 * h, 4 * h)),
            TensorSpec("high_res_1", "float32", (1, c // 4, 2 * h, 2 * h)),
            TensorSpec("pos_enc", "float32", (1, c, h, h)),
        ),
        make_inputs=make_inputs,
    )
