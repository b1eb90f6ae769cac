"""Multi-head attention with optional down-projection, as used by the SAM decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from masklet.modeling.blocked_attention import blocked_attention
from masklet.modeling.common import linear

# Query rows per attention product in exported graphs. ONNX Runtime computes attention as
# MatMul, Softmax, MatMul with the whole [Nq, Nk] score matrix in memory; in slices of
# 1024 query rows the memory cross-attention at 1024 px (4096 x 28,736 scores) ran 20 %
# faster on a 2-core AVX2 CPU (`onnxruntime` 1.32), each row being computed alone either way.
EXPORT_QUERY_ROWS = 1024


def exported_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as traced for export: q [B, heads, Nq, d] (Nq static) in
    slices of `EXPORT_QUERY_ROWS` rows; k [B, heads, Nk, d], v [B, heads, Nk, dv]."""
    if q.shape[-2] <= EXPORT_QUERY_ROWS:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(part, k, v)
                      for part in q.split(EXPORT_QUERY_ROWS, dim=-2)], dim=-2)


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
            self.split_heads(linear(q, self.q_proj)),
            self.split_heads(linear(k, self.k_proj)),
            self.split_heads(linear(v, self.v_proj)),
        )

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Fused attention over split heads, then merge and project out: -> [B, Nq, C]."""
        if torch.compiler.is_exporting() and not self.training:
            out = exported_attention(q, k, v)
        else:
            p = self.dropout_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return linear(self.merge_heads(out), self.out_proj)

    def values_late(self) -> bool:
        """Whether to attend over the raw kv_in_dim-wide values and project them after.

        Exact because attention weights sum to one per query (so the value bias passes
        through), and cheaper when the raw values of all heads are narrower than the
        projected ones (the 64-wide memories of the memory cross-attention). Used in
        float32 inference only: without autograd and attention dropout, and not in
        reduced precision, where the fused SDPA kernels keep their scores in float32.
        ONNX export traces with autograd on but is inference too: its graphs attend late.
        """
        weight = self.q_proj.weight
        return (
            self.num_heads * self.kv_in_dim < self.internal_dim
            and not (self.training and self.dropout_p > 0)
            and (not torch.is_grad_enabled() or torch.compiler.is_exporting())
            and weight.dtype == torch.float32
            and not torch.is_autocast_enabled(weight.device.type)
        )

    def attend_late(self, q: torch.Tensor, k: torch.Tensor, v_raw: torch.Tensor) -> torch.Tensor:
        """Attention with values projected after mixing (see `values_late`).

        q: [B or 1, heads, Nq, c]; k: [B, heads, Nk, c]; v_raw: [B, Nk, kv_in_dim]
        (unprojected) -> [B, Nq, embedding_dim].
        """
        if torch.compiler.is_exporting():
            # blocked_attention loops over the batch in Python, which would fix it in an
            # exported graph; the traced product keeps B dynamic.
            mixed = exported_attention(q.expand(k.shape[0], -1, -1, -1), k,
                                       v_raw.unsqueeze(1).expand(-1, k.shape[1], -1, -1))
        else:
            mixed = blocked_attention(q, k, v_raw.unsqueeze(1))  # [B, heads, Nq, kv_in_dim]
        heads, width = self.num_heads, self.internal_dim // self.num_heads
        weight = self.v_proj.weight.view(heads, width, self.kv_in_dim).transpose(1, 2)
        values = torch.matmul(mixed, weight) + self.v_proj.bias.view(heads, 1, width)
        return linear(self.merge_heads(values), self.out_proj)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: [B, Nq, embedding_dim]; k, v: [B, Nk, kv_in_dim] -> [B, Nq, embedding_dim]."""
        return self.attend(*self.project(q, k, v))
