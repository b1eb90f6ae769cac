"""EdgeTAM's 2D spatial perceiver: compresses a memory map into a few latent tokens.

A stored SAM 2 memory is the full H x W map (4096 tokens at 1024 px), and memory
attention cost grows with it. EdgeTAM resamples each memory frame, right after the
memory encoder, into two sets of learned latent queries:

- global latents (``latents``, 256) cross-attend to the whole map, with the map's sine
  position encoding added to its keys AND values; they carry no position afterwards
  (zero encoding, and memory attention does not rotate them);
- 2D latents (``latents_2d``, a 16 x 16 grid) each cross-attend to one window of the map
  (64 / 16 = 4 x 4 tokens at 1024 px), so they keep the layout: they get the sine
  encoding of their grid and rotary positions in memory attention.

Each layer is cross-attention, MLP and (``use_self_attn``) latent self-attention plus an
MLP, all pre-norm with residuals. Parameter names follow the official checkpoint
(``spatial_perceiver.*``); the MLPs are bias-free, as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from masklet.modeling.position_encoding import PositionEmbeddingSine


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm bias-free MLP; indices 0, 1, 3 hold the checkpoint's ``ff.N`` weights."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class _Heads(nn.Module):
    """Head splitting and fused attention shared by the two attention kinds."""

    heads: int
    dropout_p: float

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, heads * c] -> [B, heads, N, c]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _attend(self, q, k, v, out: nn.Linear) -> torch.Tensor:
        p = self.dropout_p if self.training else 0.0
        mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return out(mixed.transpose(1, 2).flatten(2))


class LatentCrossAttention(_Heads):
    """Latents [B, L, dim] attend to inputs [B, N, dim] (``norm_latents``, ``norm_x``)."""

    def __init__(self, dim: int, dim_head: int, heads: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dropout_p = heads, dropout_p
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: torch.Tensor, x: torch.Tensor,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        """latents: [B, L, dim]; x: [B, N, dim]; pos: [B, N, dim] added to keys and values
        (after projection, as the official layer does) -> [B, L, dim]."""
        q = self._split(self.to_q(self.norm_latents(latents)))
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        if pos is not None:
            k, v = k + pos, v + pos
        return self._attend(q, self._split(k), self._split(v), self.to_out)


class LatentSelfAttention(_Heads):
    """Pre-norm self-attention among latents (``norm``, ``to_q``, ``to_kv``, ``to_out``)."""

    def __init__(self, dim: int, dim_head: int, heads: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dropout_p = heads, dropout_p
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: [B, L, dim] -> [B, L, dim]."""
        normed = self.norm(latents)
        k, v = self.to_kv(normed).chunk(2, dim=-1)
        return self._attend(self._split(self.to_q(normed)), self._split(k), self._split(v),
                            self.to_out)


class PerceiverLayer(nn.Module):
    """Cross-attention to the inputs and an MLP, then optionally self-attention and an MLP."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int,
                 use_self_attn: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = LatentCrossAttention(dim, dim_head, heads)
        self.ff = feed_forward(dim, ff_mult)
        self.dropout = nn.Dropout(dropout)
        self.use_self_attn = use_self_attn
        if use_self_attn:
            self.self_attn = LatentSelfAttention(dim, dim_head, heads)
            self.self_ff = feed_forward(dim, ff_mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        latents = self.dropout(latents + self.attn(latents, x, pos))
        latents = latents + self.ff(latents)
        if self.use_self_attn:
            latents = latents + self.self_attn(latents)
            latents = latents + self.self_ff(latents)
        return latents


class SpatialPerceiver(nn.Module):
    """Memory map [B, C, H, W] -> latent tokens [B, L1 + L2, C] and their encodings.

    Args:
        dim: memory width (mem_dim, 64); depth: layers, shared by both latent sets.
        num_latents: global latents L1 (0: none); num_latents_2d: 2D latents L2 (0: none,
            else a square number whose side divides H and W).
        dim_head, heads, ff_mult, use_self_attn: layer geometry (see `PerceiverLayer`).
    """

    def __init__(self, *, dim: int, depth: int, num_latents: int, num_latents_2d: int,
                 dim_head: int = 64, heads: int = 1, ff_mult: int = 4,
                 use_self_attn: bool = True) -> None:
        super().__init__()
        if dim_head * heads != dim:
            raise ValueError(f"dim_head * heads must equal dim (positions are added to the "
                             f"projected keys), got {dim_head} * {heads} != {dim}")
        self.num_latents, self.num_latents_2d = num_latents, num_latents_2d
        if num_latents > 0:
            self.latents = nn.Parameter(torch.randn(num_latents, dim))
        if num_latents_2d > 0:
            self.latents_2d = nn.Parameter(torch.randn(num_latents_2d, dim))
            self.grid_side = int(round(num_latents_2d**0.5))
            if self.grid_side**2 != num_latents_2d:
                raise ValueError(f"num_latents_2d must be a square, got {num_latents_2d}")
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=dim)
        self.layers = nn.ModuleList(
            PerceiverLayer(dim, dim_head, heads, ff_mult, use_self_attn) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def tokens_per_frame(self) -> int:
        return max(self.num_latents, 0) + max(self.num_latents_2d, 0)

    def token_positions(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[L, C] position encodings of the output tokens (the same for every memory):
        zeros for the global latents, the sine encoding of the grid for the 2D latents."""
        c = self.norm.normalized_shape[0]
        parts = [torch.zeros(max(self.num_latents, 0), c, device=device, dtype=dtype)]
        if self.num_latents_2d > 0:
            probe = torch.empty(1, c, self.grid_side, self.grid_side, device=device, dtype=dtype)
            parts.append(self.position_encoding(probe)[0].flatten(1).t().to(dtype))
        return torch.cat(parts, dim=0)

    def forward(self, x: torch.Tensor,
                pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, C, H, W] memory; pos: [B or 1, C, H, W] its position encoding (used by
        the global latents). Returns latents [B, L, C] (global first, then the 2D grid
        row-major) and their position encodings [B, L, C]."""
        latents, positions = [], []
        if self.num_latents > 0:
            latents.append(self._global(x, pos))
            positions.append(torch.zeros_like(latents[-1]))
        if self.num_latents_2d > 0:
            grid = self._windowed(x)
            positions.append(self.position_encoding(grid).flatten(2).transpose(1, 2))
            latents.append(self.norm(grid.flatten(2).transpose(1, 2)))
        out_pos = torch.cat(positions, dim=1).to(x.dtype)
        return torch.cat(latents, dim=1), out_pos.expand(x.shape[0], -1, -1)

    def _global(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        """Global latents after every layer and the final norm: [B, L1, C]."""
        b = x.shape[0]
        tokens = x.flatten(2).transpose(1, 2)
        pos_tokens = None
        if pos is not None:
            pos_tokens = pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        latents = self.latents.unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            latents = layer(latents, tokens, pos_tokens)
        return self.norm(latents)

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        """2D latents, one per window, BEFORE the final norm: [B, C, side, side]."""
        b, c, h, w = x.shape
        side = self.grid_side
        if h % side or w % side:
            raise ValueError(f"memory map {h}x{w} does not split into {side}x{side} windows")
        wh, ww = h // side, w // side
        # [B, C, H, W] -> [B * side * side windows (row-major), wh * ww tokens, C]
        windows = x.reshape(b, c, side, wh, side, ww).permute(0, 2, 4, 3, 5, 1)
        windows = windows.reshape(b * side * side, wh * ww, c)
        # One latent per window: latent j of every image queries window j.
        latents = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
        for layer in self.layers:
            latents = layer(latents, windows)
        return latents.reshape(b, side, side, c).permute(0, 3, 1, 2)
