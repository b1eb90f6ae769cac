"""Rotary cross-attention whose queries and keys lie on different grids (EdgeTAM).

In SAM 2 a memory frame has the current frame's layout (64 x 64 at 1024 px), so queries
and memory keys share one rotary grid. EdgeTAM's perceiver compresses a memory frame to
``tokens_per_frame`` latents: first global latents with no position, then a small grid of
2D latents (16 x 16). Queries are rotated by their own grid (the frame's H x W); in each
memory frame the global latents are left unrotated and the 2D latents are rotated by the
key grid, whose positions are in key-grid cells (0..15), not in query pixels. Trailing
object-pointer tokens are left unrotated, as in SAM 2.
"""

from __future__ import annotations

import torch

from masklet.modeling.rope import RoPEAttention, apply_axial_rope, rotate_pairs


class SplitGridRoPEAttention(RoPEAttention):
    """RoPE attention with a query grid (per frame, see `RoPEAttention`) and a fixed key grid.

    Args:
        k_sizes: (width, height) of the key grid of each memory frame (16, 16).
        k_tokens_per_frame: tokens of one memory frame; its first
            ``k_tokens_per_frame - width * height`` are not rotated.
        others: as `RoPEAttention` (``feat_sizes`` is the default query grid).
    """

    def __init__(self, *, k_sizes: tuple[int, int], k_tokens_per_frame: int, **kwargs) -> None:
        super().__init__(rope_k_repeat=True, **kwargs)
        self.k_sizes = (int(k_sizes[0]), int(k_sizes[1]))
        self.k_grid_tokens = self.k_sizes[0] * self.k_sizes[1]
        if k_tokens_per_frame < self.k_grid_tokens:
            raise ValueError(f"a memory frame of {k_tokens_per_frame} tokens cannot hold a "
                             f"{self.k_sizes} key grid")
        self.k_tokens_per_frame = int(k_tokens_per_frame)

    def rotate_keys(self, k: torch.Tensor, num_k_exclude: int) -> torch.Tensor:
        """k: [B, heads, Nk, c], Nk = r * k_tokens_per_frame + num_k_exclude -> rotated k."""
        if isinstance(num_k_exclude, torch.Tensor):
            return self.rotate_keys_traced(k, num_k_exclude)
        num_frame_tokens = k.shape[-2] - num_k_exclude
        if num_frame_tokens % self.k_tokens_per_frame:
            raise ValueError(f"{num_frame_tokens} memory tokens are not whole frames of "
                             f"{self.k_tokens_per_frame}")
        if num_frame_tokens == 0:
            return k
        width, height = self.k_sizes
        cos, sin = self.rope_cos_sin(height, width, k.shape[-1], k.device)
        frames = k[..., :num_frame_tokens, :].unflatten(-2, (-1, self.k_tokens_per_frame))
        lead = self.k_tokens_per_frame - self.k_grid_tokens
        grid = rotate_pairs(frames[..., lead:, :].float(), cos, sin).to(k.dtype)
        frames = torch.cat([frames[..., :lead, :], grid], dim=-2).flatten(-3, -2)
        return torch.cat([frames, k[..., num_frame_tokens:, :]], dim=-2)

    def rotate_keys_traced(self, k: torch.Tensor, num_k_exclude: torch.Tensor) -> torch.Tensor:
        """`rotate_keys` for a tensor count of trailing unrotated keys (ONNX export): every
        key is rotated by its frame's grid position, then the global latents and the
        trailing keys take back their unrotated values, so no shape depends on the count."""
        width, height = self.k_sizes
        cos, sin = self.rope_cos_sin(height, width, k.shape[-1], k.device)
        index = torch.arange(k.shape[-2], device=k.device)
        lead = self.k_tokens_per_frame - self.k_grid_tokens
        in_frame = index % self.k_tokens_per_frame
        grid = (in_frame - lead).clamp(min=0)
        rotated = rotate_pairs(k.float(), cos[grid], sin[grid]).to(k.dtype)
        keep = (index < k.shape[-2] - num_k_exclude) & (in_frame >= lead)
        return torch.where(keep.unsqueeze(-1), rotated, k)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               num_k_exclude: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries by their own grid (``cos``, ``sin``), keys by the key grid (`rotate_keys`)."""
        # The shared fast rotation (complex multiply, in place without autograd); no keys.
        q, _ = apply_axial_rope(q, q[..., :0, :], cos, sin, repeat_k=True,
                                inplace=not torch.is_grad_enabled())
        return q, self.rotate_keys(k, num_k_exclude)
