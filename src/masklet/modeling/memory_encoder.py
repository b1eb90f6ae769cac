"""Memory encoder: fuses a frame's image features with its predicted mask into a memory.

The mask is downsampled to the feature stride by a small conv stack, added to projected
image features, mixed by ConvNeXt blocks and projected to the (narrower) memory width.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from masklet.modeling.common import LayerNorm2d, linear_activation


@dataclass
class MemoryEncoderOutput:
    """vision_features: [B, out_dim, h, w]; vision_pos_enc: one [B, pos_dim, h, w] tensor."""

    vision_features: torch.Tensor
    vision_pos_enc: list[torch.Tensor]


class MaskDownSampler(nn.Module):
    """Downsample a 1-channel mask by ``total_stride`` in steps of ``stride``.

    Each step is conv -> LayerNorm2d -> activation and multiplies the channels by
    stride**2 (so no information is discarded by the spatial reduction); a final 1x1 conv
    maps to ``embed_dim``. Layers live in ``encoder`` (a Sequential), as in the checkpoints.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        num_steps = round(math.log(total_stride, stride))
        if stride**num_steps != total_stride:
            raise ValueError(f"total_stride={total_stride} is not a power of stride={stride}")
        self.encoder = nn.Sequential()
        channels = 1
        for _ in range(num_steps):
            out_channels = channels * stride**2
            self.encoder.append(
                nn.Conv2d(channels, out_channels, kernel_size, stride=stride, padding=padding)
            )
            self.encoder.append(LayerNorm2d(out_channels))
            self.encoder.append(activation())
            channels = out_channels
        self.encoder.append(nn.Conv2d(channels, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 1, H, W] -> [B, embed_dim, H / total_stride, W / total_stride]."""
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP (GELU), layer-scaled residual.

    ``gamma`` (the layer scale) is omitted when ``layer_scale_init_value`` <= 0, as in the
    official block; without ``use_dwconv`` the spatial conv is a full conv.
    """

    def __init__(
        self,
        *,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        groups = dim if use_dwconv else 1
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=groups)
        # Normalising channels-last (equivalent to a channels-first LayerNorm2d, same
        # parameter names) avoids permuting back and forth around the norm.
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, dim, H, W] -> [B, dim, H, W]."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(linear_activation(self.norm(y), self.pwconv1, self.act))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """``num_layers`` independent copies of ``layer``, optionally after a 1x1 input conv."""

    def __init__(
        self,
        *,
        layer: nn.Module,
        num_layers: int,
        dim: int | None = None,
        input_projection: bool = False,
    ) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        if input_projection:
            if dim is None:
                raise ValueError("input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode (image features, mask) into a memory and its positional encoding.

    ``out_proj`` is a 1x1 conv to ``out_dim`` (an identity when out_dim == in_dim).
    """

    def __init__(
        self,
        *,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj: nn.Module = (
            nn.Identity() if out_dim == in_dim else nn.Conv2d(in_dim, out_dim, kernel_size=1)
        )

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> MemoryEncoderOutput:
        """pix_feat: [B, in_dim, h, w]; masks: [B, 1, h * s, w * s] (s = total stride).

        ``masks`` are logits turned into probabilities here, unless ``skip_mask_sigmoid``
        (the tracker passes probabilities it has already scaled and squashed).
        Returns features [B, out_dim, h, w] and their position encoding.
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return MemoryEncoderOutput(vision_features=x, vision_pos_enc=[pos])
