"""Hiera: the hierarchical vision transformer trunk of the SAM 2 image encoder.

Tokens live in a channels-last grid [B, H, W, C]. Each stage halves the grid (by max-pooling
the attention queries in its first block) and doubles the width. Most blocks attend within
square windows; a few chosen blocks attend globally.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from masklet.modeling.common import MLP, linear

# Tokens per band when a windowed block runs band by band (see MultiScaleBlock).
BAND_TOKENS = 4096


def drop_path(x: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, zero a whole residual branch for a random subset of
    samples (each with probability ``prob``) and rescale the kept ones by 1 / (1 - prob).

    x: [B, ...] -> [B, ...]; the identity when ``prob`` is 0 or not training.
    """
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a grid into non-overlapping square windows, zero-padding the bottom/right edges.

    x: [B, H, W, C] -> (windows [B * nWindows, window, window, C], padded (Hp, Wp)).
    """
    batch, height, width, channels = x.shape
    pad_h, pad_w = -height % window, -width % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    rows, cols = (height + pad_h) // window, (width + pad_w) // window
    x = x.reshape(batch, rows, window, cols, window, channels).transpose(2, 3)
    return x.reshape(-1, window, window, channels), (rows * window, cols * window)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, cropping the padding away.

    windows: [B * nWindows, window, window, C] -> [B, H, W, C].
    """
    (padded_h, padded_w), (height, width) = padded_hw, hw
    rows, cols = padded_h // window, padded_w // window
    batch = windows.shape[0] // (rows * cols)
    x = windows.reshape(batch, rows, cols, window, window, -1).transpose(2, 3)
    x = x.reshape(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width]
    return x


def pool_grid(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a channels-last grid with kernel = stride (floor mode).

    x: [B, H, W, C] -> [B, H // sh, W // sw, C].
    """
    pooled = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return pooled.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Overlapping 7x7 stride-4 convolution from pixels to tokens.

    Parameter name ``proj`` follows the checkpoints.
    """

    def __init__(self, *, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> tokens [B, H/4, W/4, embed_dim] (channels last)."""
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (keys/values are not),
    so the output grid is smaller than the input grid at stage transitions.
    """

    def __init__(
        self, *, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, dim] -> [B, H', W', dim_out], (H', W') = (H, W) // q_stride."""
        batch, height, width, _ = x.shape
        qkv = linear(x, self.qkv).reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each [B, N, heads, c]
        if self.q_stride is not None:
            q = pool_grid(q.reshape(batch, height, width, -1), self.q_stride)
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)
        # SDPA wants [B, heads, N, c].
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return linear(out.transpose(1, 2).reshape(batch, height, width, -1), self.proj)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block: (windowed or global) attention, then an MLP.

    At a stage transition the width changes (the residual goes through ``proj``) and, with
    ``q_stride``, the grid is pooled (the residual is pooled the same way).
    Parameter names follow the checkpoints.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        q_stride: tuple[int, int] | None = None,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.q_stride = q_stride
        self.drop_path_prob = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(
            dim=dim, dim_out=dim_out, num_heads=num_heads, q_stride=q_stride
        )
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised tokens [B, H, W, dim] -> [B, H', W', dim_out]."""
        if self.window_size == 0:
            return self.attn(x)
        height, width = x.shape[1:3]
        windows, (padded_h, padded_w) = window_partition(x, self.window_size)
        out = self.attn(windows)
        if self.q_stride is None:
            return window_unpartition(out, self.window_size, (padded_h, padded_w), (height, width))
        # Pooling each window pooled the padded grid as a whole; crop to the size the
        # un-padded grid pools to.
        (stride_h, stride_w), window = self.q_stride, self.window_size // self.q_stride[0]
        padded_hw = (padded_h // stride_h, padded_w // stride_w)
        return window_unpartition(out, window, padded_hw, (height // stride_h, width // stride_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, dim] -> [B, H', W', dim_out]."""
        rows = self._band_rows(x)
        if rows is None:
            return self._forward_grid(x)
        bands = [self._forward_grid(x[:, r : r + rows]) for r in range(0, x.shape[1], rows)]
        return torch.cat(bands, dim=1)

    def _band_rows(self, x: torch.Tensor) -> int | None:
        """Rows per horizontal band when the block should run band by band, else None.

        Every step of a windowed block acts on one token or one window, so bands of whole
        window rows give exactly the whole grid's result. On the large early grids (256 x 256
        tokens at 1024 px) a band's activations stay in cache where the whole grid's
        (up to 150 MB per tensor) would stream through memory several times per block.
        Outside autograd only (training keeps the one-piece graph).
        """
        if self.window_size == 0 or torch.is_grad_enabled():
            return None
        unit = self.window_size
        if self.q_stride is not None:
            unit = math.lcm(unit, self.q_stride[0])
        rows = unit * max(1, BAND_TOKENS // (unit * x.shape[2]))
        return rows if rows < x.shape[1] else None

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The block on a whole grid (or a band of whole window rows of it)."""
        normed = self.norm1(x)
        # The width-changing residual starts from the normalised tokens.
        shortcut = x if self.proj is None else linear(normed, self.proj)
        if self.q_stride is not None:
            shortcut = pool_grid(shortcut, self.q_stride)
        x = shortcut + drop_path(self._attend(normed), self.drop_path_prob, self.training)
        mlp_out = self.mlp(self.norm2(x))
        return x + drop_path(mlp_out, self.drop_path_prob, self.training)


class Hiera(nn.Module):
    """Hiera trunk (https://arxiv.org/abs/2306.00989) with the windowed absolute position
    embedding of https://arxiv.org/abs/2311.05613.

    Args:
        embed_dim, num_heads: width and heads of the first stage.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
        q_pool: how many stage transitions pool the grid (by ``q_stride``).
        stages: blocks per stage.
        dim_mul, head_mul: width and heads multipliers at each stage transition.
        window_pos_embed_bkg_spatial_size: size of the background position embedding,
            resized (bicubic) to the token grid.
        window_spec: attention window per stage (a stage's first block uses the previous
            stage's window, since it still sees the previous stage's grid).
        global_att_blocks: indices of the blocks attending globally.
        return_interm_layers: return every stage's output, not just the last.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        drop_path_rate: float = 0.0,
        q_pool: int = 3,
        q_stride: tuple[int, int] = (2, 2),
        stages: tuple[int, ...],
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14),
        window_spec: tuple[int, ...] = (8, 4, 14, 7),
        global_att_blocks: tuple[int, ...] = (12, 16, 20),
        return_interm_layers: bool = True,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError("stages and window_spec must have the same length")
        if not 0 <= q_pool < len(stages):
            raise ValueError(f"q_pool must be in [0, {len(stages) - 1}], got {q_pool}")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.return_interm_layers = return_interm_layers
        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )
        self.blocks = self._build_blocks(
            embed_dim=embed_dim,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
            pooled_stages=q_pool,
            q_stride=tuple(q_stride),
            stages=stages,
            dim_mul=dim_mul,
            head_mul=head_mul,
            window_spec=window_spec,
            global_att_blocks=set(global_att_blocks),
        )
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None
        ends = self.stage_ends if return_interm_layers else self.stage_ends[-1:]
        # Widths of the returned maps, lowest resolution first (the neck's order).
        self.channel_list = [self.blocks[i].mlp.layers[-1].out_features for i in ends[::-1]]

    @staticmethod
    def _build_blocks(
        *,
        embed_dim: int,
        num_heads: int,
        drop_path_rate: float,
        pooled_stages: int,
        q_stride: tuple[int, int],
        stages: tuple[int, ...],
        dim_mul: float,
        head_mul: float,
        window_spec: tuple[int, ...],
        global_att_blocks: set[int],
    ) -> nn.ModuleList:
        # Plain numbers, so computed on the CPU even when building on another device.
        drop_rates = torch.linspace(0, drop_path_rate, sum(stages), device="cpu").tolist()
        blocks = nn.ModuleList()
        dim = embed_dim
        for stage, depth in enumerate(stages):
            for j in range(depth):
                transition = stage > 0 and j == 0
                dim_out = int(dim * dim_mul) if transition else dim
                num_heads = int(num_heads * head_mul) if transition else num_heads
                window = window_spec[stage - 1] if transition else window_spec[stage]
                index = len(blocks)
                block = MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    window_size=0 if index in global_att_blocks else window,
                    q_stride=q_stride if transition and stage <= pooled_stages else None,
                    drop_path=drop_rates[index],
                )
                blocks.append(block)
                dim = dim_out
        return blocks

    def _position_embedding(self, height: int, width: int) -> torch.Tensor:
        """Background embedding resized to the grid plus the tiled window embedding:
        [1, H, W, embed_dim].

        Outside autograd the result is kept for the next frame of the same size (the
        bicubic resize costs as much as a small layer); the key holds the parameters'
        version counters, so loading or training new weights recomputes it.
        """
        if torch.is_grad_enabled():
            return self._compute_position_embedding(height, width)
        params = (self.pos_embed, self.pos_embed_window)
        key = (height, width, torch.is_autocast_enabled(self.pos_embed.device.type),
               *((p.data_ptr(), p._version, p.dtype) for p in params))
        if self._pos_cache is None or self._pos_cache[0] != key:
            # A normal tensor, usable by later calls whether or not in inference mode.
            with torch.inference_mode(False):
                self._pos_cache = (key, self._compute_position_embedding(height, width))
        return self._pos_cache[1]

    def _compute_position_embedding(self, height: int, width: int) -> torch.Tensor:
        background = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")
        window = self.pos_embed_window.shape[-1]
        reps = (1, 1, math.ceil(height / window), math.ceil(width / window))
        tiled = self.pos_embed_window.tile(reps)[:, :, :height, :width]
        return (background + tiled).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B, 3, H, W] -> per stage [B, C_i, H / 2^(i+2), W / 2^(i+2)], highest resolution
        first (only the last stage unless ``return_interm_layers``).
        """
        x = self.patch_embed(x)
        x = x + self._position_embedding(*x.shape[1:3])
        ends = set(self.stage_ends if self.return_interm_layers else self.stage_ends[-1:])
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
