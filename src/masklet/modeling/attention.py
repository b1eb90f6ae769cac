"""Multi-head attention with optional down-projection, as used by the SAM decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention whose internal width may be reduced by ``downsample_rate``.

    Keys and values may come from a space of another width (``kv_in_dim``), as in the
    memory cross-attention where memories are 64-dimensional.
    Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) follow the checkpoints.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide internal_dim={self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, heads, N, C / heads]."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, heads, N, c] -> [B, N, heads * c]."""
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Project inputs and split heads: each [B, N, C] -> [B, heads, N, c]."""
        return (
            self.split_heads(self.q_proj(q)),
            self.split_heads(self.k_proj(k)),
            self.split_heads(self.v_proj(v)),
        )

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Fused attention over split heads, then merge and project out: -> [B, Nq, C]."""
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.out_proj(self.merge_heads(out))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: [B, Nq, embedding_dim]; k, v: [B, Nk, kv_in_dim] -> [B, Nq, embedding_dim]."""
        return self.attend(*self.project(q, k, v))
