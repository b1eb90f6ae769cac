"""Image encoder: the Hiera trunk followed by a feature-pyramid neck."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ImageEncoderOutput:
    """Multi-scale image features, highest resolution first.

    vision_features: [B, d_model, H/16, W/16] (the lowest-resolution kept level).
    vision_pos_enc: per level [B, d_model, H_i, W_i] position encodings.
    backbone_fpn: per level [B, d_model, H_i, W_i] features (H_i = H / 2^(i+2)).
    """

    vision_features: torch.Tensor
    vision_pos_enc: list[torch.Tensor]
    backbone_fpn: list[torch.Tensor]


class FpnNeck(nn.Module):
    """Feature pyramid without output convolutions: a lateral 1x1 conv per trunk level,
    plus upsampled coarser features on the ``fpn_top_down_levels`` levels.

    Args:
        position_encoding: module mapping [B, C, H, W] -> [B, d_model, H, W].
        d_model: output width of every level.
        backbone_channel_list: trunk widths, LOWEST resolution first (``convs`` order).
        kernel_size, stride, padding: lateral convolution geometry.
        fpn_interp_model: interpolation mode of the top-down upsampling.
        fuse_type: "sum" or "avg" of lateral and top-down features.
        fpn_top_down_levels: levels (0 = highest resolution) receiving top-down features;
            all when None.
    """

    def __init__(
        self,
        *,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "nearest",
        fuse_type: str = "sum",
        fpn_top_down_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        # Each lateral conv sits in a Sequential so the names read ``convs.N.conv.*``
        # as in the checkpoints.
        self.convs = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(channels, d_model, kernel_size, stride=stride, padding=padding)
                )
            )
            for channels in self.backbone_channel_list
        )
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = list(levels)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> float32 [B, C, 2H, 2W]."""
        # Upsampling runs in float32 (as the official neck does), which also makes the
        # fused features float32 under mixed precision.
        align = None if self.fpn_interp_model == "nearest" else False
        return F.interpolate(
            x.float(), scale_factor=2.0, mode=self.fpn_interp_model, align_corners=align
        )

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """xs: trunk maps, highest resolution first, xs[i]: [B, C_i, H_i, W_i].

        Returns (features, position encodings), each per level [B, d_model, H_i, W_i],
        highest resolution first.
        """
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature maps, got {len(xs)}")
        last = len(xs) - 1
        features: list[torch.Tensor] = [None] * len(xs)
        coarser = None
        # Coarsest level first, so each level can add the one above it.
        for level in range(last, -1, -1):
            fused = self.convs[last - level](xs[level])
            if coarser is not None and level in self.fpn_top_down_levels:
                fused = fused + self._upsample(coarser)
                if self.fuse_type == "avg":
                    fused = fused / 2
            features[level] = coarser = fused
        positions = [self.position_encoding(f).to(f.dtype) for f in features]
        return features, positions


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the ``scalp`` lowest-resolution levels from the output.

    Parameter names (``trunk.*``, ``neck.*``) follow the checkpoints.
    """

    def __init__(self, *, trunk: nn.Module, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channels {trunk.channel_list} != neck channels {neck.backbone_channel_list}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, sample: torch.Tensor) -> ImageEncoderOutput:
        """sample: normalised images [B, 3, H, W] -> :class:`ImageEncoderOutput`."""
        features, positions = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features, positions = features[: -self.scalp], positions[: -self.scalp]
        return ImageEncoderOutput(
            vision_features=features[-1], vision_pos_enc=positions, backbone_fpn=features
        )
