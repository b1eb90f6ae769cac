"""RepViT trunk (EdgeTAM's image encoder), with timm's feature-extractor parameter names.

RepViT ("RepViT: Revisiting Mobile CNN From ViT Perspective", Wang et al. 2023) is a
MobileNet-style CNN: each block mixes space with a depthwise 3x3 convolution plus a
parallel 1x1 depthwise branch and an identity (RepVGG style), optionally squeezes and
excites, then mixes channels with a 1x1-conv MLP. Every convolution is followed by a
batch norm. EdgeTAM uses RepViT-M1 as timm builds it with ``features_only=True``, so the
official checkpoint names are ``body.stem.*`` and ``body.stages_N.*`` (the "legacy" block
layout of the M1 weights); the modules here reproduce those names.

Inference runs re-parameterised, as RepViT's authors designed it: every batch norm is
folded into its convolution and the three branches of the spatial mixer merge into one
depthwise convolution. The folded weights are derived from the parameters on first use
and cached, keyed by the parameters' versions (a load or an optimiser step refreshes
them), so the modules and the state dict keep the checkpoint's layout. Training, and any
call with autograd enabled, runs the plain layers (batch norms need them to train).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a bias-free convolution followed by ``bn`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


def _use_folded(module: nn.Module) -> bool:
    """Inference without autograd (and outside torch.compile, which traces the plain
    layers and fuses them itself)."""
    return not (module.training or torch.is_grad_enabled() or torch.compiler.is_compiling())


class _FoldCache:
    """Folded (weight, bias), recomputed when any source tensor changed (version counter),
    moved or was replaced. Held as a plain attribute: not in the state dict."""

    def __init__(self) -> None:
        self.key: tuple = ()
        self.value: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, sources: tuple[torch.Tensor, ...], compute):
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if self.value is None or key != self.key:
            with torch.no_grad():
                self.value = compute()
            self.key = key
        return self.value


class ConvNorm(nn.Module):
    """Convolution without bias followed by a batch norm (``c``, ``bn`` as in timm)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, groups=groups,
                           bias=False)
        self.bn = nn.BatchNorm2d(out_dim)
        self._fold = _FoldCache()

    def sources(self) -> tuple[torch.Tensor, ...]:
        bn = self.bn
        return (self.c.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of one convolution equal to this module in eval mode."""
        return self._fold.get(self.sources(), lambda: _fold_bn(self.c.weight, self.bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_folded(self):
            return self.bn(self.c(x))
        weight, bias = self.folded()
        c = self.c
        return F.conv2d(x, weight, bias, c.stride, c.padding, groups=c.groups)


class RepVggDw(nn.Module):
    """Spatial mixer: depthwise kxk conv-norm + depthwise 1x1 conv-norm + identity."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel_size, 1, (kernel_size - 1) // 2, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, 1, 0, groups=dim)
        self._fold = _FoldCache()

    def _merge(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The three branches as one depthwise kxk kernel: the 1x1 kernel and the identity
        (a 1x1 kernel of ones) are added at the centre of the kxk one."""
        weight, bias = self.conv.folded()
        small, small_bias = self.conv1.folded()
        pad = (weight.shape[-1] - 1) // 2
        centre = F.pad(small + 1.0, [pad, pad, pad, pad])
        return weight + centre, bias + small_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_folded(self):
            return self.conv(x) + self.conv1(x) + x
        weight, bias = self._fold.get(self.conv.sources() + self.conv1.sources(), self._merge)
        return F.conv2d(x, weight, bias, 1, self.conv.c.padding, groups=weight.shape[0])


class SqueezeExcite(nn.Module):
    """Channel gating from the spatial mean (``fc1``, ``fc2`` 1x1 convs, as in timm)."""

    def __init__(self, dim: int, ratio: float = 0.25, divisor: int = 8) -> None:
        super().__init__()
        # timm's make_divisible with round_limit 0: the nearest multiple of the divisor.
        hidden = max(divisor, int(dim * ratio + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class ConvMlp(nn.Module):
    """Channel mixer: 1x1 conv-norm, GELU, 1x1 conv-norm."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTBlock(nn.Module):
    """Spatial mixer, optional squeeze-excite, then a residual channel MLP."""

    def __init__(self, dim: int, mlp_ratio: int, kernel_size: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel_size)
        self.se = SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = ConvMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class Downsample(nn.Module):
    """Stage entry: a block, a stride-2 depthwise conv, a 1x1 widening, a residual MLP."""

    def __init__(self, in_dim: int, out_dim: int, mlp_ratio: int, kernel_size: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(in_dim, mlp_ratio, kernel_size, use_se=False)
        self.spatial_downsample = ConvNorm(in_dim, in_dim, kernel_size, 2,
                                           (kernel_size - 1) // 2, groups=in_dim)
        self.channel_downsample = ConvNorm(in_dim, out_dim)
        self.ffn = ConvMlp(out_dim, out_dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class Stage(nn.Module):
    """Optional downsample, then blocks alternating with and without squeeze-excite."""

    def __init__(self, in_dim: int, out_dim: int, depth: int, mlp_ratio: int,
                 kernel_size: int, downsample: bool) -> None:
        super().__init__()
        if downsample:
            self.downsample = Downsample(in_dim, out_dim, mlp_ratio, kernel_size)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*(
            RepViTBlock(out_dim, mlp_ratio, kernel_size, use_se=i % 2 == 0)
            for i in range(depth)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Stem(nn.Module):
    """Two stride-2 3x3 conv-norms with a GELU between: stride 4, ``out_dim`` channels."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_dim, out_dim // 2, 3, 2, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvNorm(out_dim // 2, out_dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.conv1(x)))


class RepViTBody(nn.Module):
    """The feature extractor: ``stem`` then ``stages_0`` ... ``stages_{N-1}`` (timm names)."""

    def __init__(self, embed_dim: Sequence[int], depth: Sequence[int], mlp_ratio: int,
                 kernel_size: int) -> None:
        super().__init__()
        self.stem = Stem(3, embed_dim[0])
        self.num_stages = len(embed_dim)
        in_dim = embed_dim[0]
        for i, (dim, d) in enumerate(zip(embed_dim, depth)):
            stage = Stage(in_dim, dim, d, mlp_ratio, kernel_size, downsample=i > 0)
            self.add_module(f"stages_{i}", stage)
            in_dim = dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i in range(self.num_stages):
            x = getattr(self, f"stages_{i}")(x)
            features.append(x)
        return features


class RepViT(nn.Module):
    """RepViT trunk: images [B, 3, S, S] -> one map per stage, highest resolution first,
    [B, embed_dim[i], S / 2^(i+2), S / 2^(i+2)].

    Args:
        embed_dim: channels per stage; depth: blocks per stage; mlp_ratio: MLP widening;
        kernel_size: depthwise kernel size.
    """

    def __init__(self, *, embed_dim: Sequence[int], depth: Sequence[int], mlp_ratio: int = 2,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if len(embed_dim) != len(depth):
            raise ValueError(f"embed_dim {embed_dim} and depth {depth} differ in length")
        self.body = RepViTBody(embed_dim, depth, mlp_ratio, kernel_size)
        self.channel_list = list(reversed(embed_dim))  # lowest resolution first, as the FPN

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
