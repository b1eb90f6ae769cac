"""Fixed sinusoidal position encodings: 2-D for feature maps, 1-D for sequences."""

from __future__ import annotations

import math

import torch
from torch import nn


def _inverse_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """Divisors shared by consecutive (sin, cos) channel pairs: [num_feats] float32.

    Channels 2k and 2k+1 get the same value temperature ** (2k / num_feats).
    """
    index = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (index // 2) / num_feats)


def sine_pe_1d(positions: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """Transformer-style sinusoidal encoding of (possibly fractional) positions.

    positions: [...] -> [..., dim]; the first dim/2 channels are sines, the rest cosines,
    both over the same dim/2 frequencies (this half/half layout is what the official
    object-pointer encodings use, unlike the interleaved 2-D encoding below).
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    divisors = _inverse_frequencies(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / divisors
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PositionEmbeddingSine(nn.Module):
    """2-D sinusoidal position encoding of a feature map (DETR style).

    The first num_pos_feats/2 channels encode the row (y), the rest the column (x); within
    each half, channels alternate sin/cos. With ``normalize`` the coordinates 1..H and
    1..W are rescaled to (0, scale].

    The encoding depends only on the map's shape, so it is computed once per
    (H, W, device, dtype) and cached; it holds no parameters.
    """

    def __init__(
        self,
        *,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 4:
            # Each of the two halves (y and x) must hold whole sin/cos pairs.
            raise ValueError(f"num_pos_feats must be a multiple of 4, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, torch.Tensor] = {}

    def _axis_encoding(self, length: int, device: torch.device) -> torch.Tensor:
        """Encoding of coordinates 1..length along one axis: [length, num_pos_feats/2]."""
        half = self.num_pos_feats // 2
        coords = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        if self.normalize:
            coords = coords / (coords[-1:] + 1e-6) * self.scale
        angles = coords[:, None] / _inverse_frequencies(half, self.temperature, device)
        # Interleave sin of even channels with cos of odd channels.
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def _encoding(self, height: int, width: int, device, dtype) -> torch.Tensor:
        """Cached [num_pos_feats, H, W] encoding, computed in float32 then cast."""
        key = (height, width, device, dtype)
        cached = self._cache.get(key)
        if cached is None:
            # A normal (non-inference, grad-free) tensor stays usable whatever mode
            # later callers run in.
            with torch.inference_mode(False), torch.no_grad():
                half = self.num_pos_feats // 2
                pos_y = self._axis_encoding(height, device)[:, None, :].expand(height, width, half)
                pos_x = self._axis_encoding(width, device)[None, :, :].expand(height, width, half)
                cached = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).to(dtype).contiguous()
            self._cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] (only its shape, device and dtype are used) -> [B, num_pos_feats, H, W].

        The encoding is returned in x's dtype (the official module returns float32 and its
        callers cast it to the features' dtype).

        The result is a broadcast view of a cached tensor: read it, or clone it before
        modifying it in place.
        """
        batch, _, height, width = x.shape
        encoding = self._encoding(height, width, x.device, x.dtype)
        return encoding.unsqueeze(0).expand(batch, -1, -1, -1)
