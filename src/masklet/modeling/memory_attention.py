"""Memory attention: conditions the current frame's features on memories of past frames.

A stack of transformer layers, each doing self-attention over the current frame's tokens,
cross-attention from them to the memory tokens (spatial memories of earlier frames plus
object-pointer tokens), and an MLP, all pre-norm with residuals.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from masklet.modeling.common import (
    activation_fn,
    by_row_chunks,
    linear,
    linear_activation,
)
from masklet.modeling.rope import RoPEAttention


def _rope_kwargs(attn: nn.Module, num_k_exclude_rope: int, grid_hw) -> dict:
    """Extra forward arguments for ``attn``: only RoPE attention takes them.

    Plain attention rotates no token, so it has nothing to exclude and needs no grid.
    """
    if isinstance(attn, RoPEAttention):
        return {"num_k_exclude_rope": num_k_exclude_rope, "grid_hw": grid_hw}
    return {}


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to memory, then an MLP.

    Positional encodings are added to the self-attention queries/keys only with
    ``pos_enc_at_attn``, to the cross-attention queries with
    ``pos_enc_at_cross_attn_queries`` and to the memory keys with
    ``pos_enc_at_cross_attn_keys`` (values never get them).

    Dropout follows the official layer and in the same order (attention weights inside
    each attention, then each residual branch, then inside the MLP), so that seeded
    training runs draw the same random masks; it is inactive in eval mode.
    """

    def __init__(
        self,
        *,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: nn.Module,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = activation_fn(activation)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    @staticmethod
    def _with_pos(x: torch.Tensor, pos: torch.Tensor | None, enabled: bool) -> torch.Tensor:
        return x + pos if enabled and pos is not None else x

    def _self_attention(self, tgt, query_pos, grid_hw) -> torch.Tensor:
        normed = self.norm1(tgt)
        qk = self._with_pos(normed, query_pos, self.pos_enc_at_attn)
        out = self.self_attn(qk, qk, normed, **_rope_kwargs(self.self_attn, 0, grid_hw))
        return tgt + self.dropout1(out)

    def _cross_attention(self, tgt, memory, query_pos, pos, num_k_exclude_rope, grid_hw):
        normed = self.norm2(tgt)
        out = self.cross_attn_image(
            self._with_pos(normed, query_pos, self.pos_enc_at_cross_attn_queries),
            self._with_pos(memory, pos, self.pos_enc_at_cross_attn_keys),
            memory,
            **_rope_kwargs(self.cross_attn_image, num_k_exclude_rope, grid_hw),
        )
        return tgt + self.dropout2(out)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        grid_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """tgt, query_pos: [B, HW, d_model]; memory, pos: [B, M, mem_dim] -> [B, HW, d_model].

        The last ``num_k_exclude_rope`` memory tokens (object pointers) get no rotary
        encoding; ``grid_hw`` is the (H, W) of the current frame's token grid.
        """
        tgt = self._self_attention(tgt, query_pos, grid_hw)
        tgt = self._cross_attention(tgt, memory, query_pos, pos, num_k_exclude_rope, grid_hw)
        return tgt + self.dropout3(by_row_chunks(self._feed_forward, self.norm3(tgt)))

    def _feed_forward(self, normed: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(linear_activation(normed, self.linear1, self.activation))
        return linear(hidden, self.linear2)


def _transpose01(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.transpose(0, 1)


class MemoryAttention(nn.Module):
    """``num_layers`` independent copies of ``layer`` followed by a final LayerNorm.

    Inputs and output are sequence-first, as the tracker holds them. With ``batch_first``
    (the official setting) they are transposed to batch-first for the layers, which is
    what the attention modules expect.
    """

    def __init__(
        self,
        *,
        d_model: int,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        # Deep copies: each layer gets its own weights (checkpoint keys layers.0..N-1).
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: torch.Tensor | list[torch.Tensor],
        memory: torch.Tensor,
        curr_pos: torch.Tensor | list[torch.Tensor] | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        grid_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Condition the current frame on memory.

        curr, curr_pos: [HW, B, d_model] (or one-element lists of them, as the official
        tracker passes them); memory, memory_pos: [M, B, mem_dim] whose last
        ``num_obj_ptr_tokens`` tokens are object pointers. ``grid_hw``: (H, W) of the
        current frame's tokens, inferred as a square grid when omitted.
        Returns [HW, B, d_model].

        B objects tracked on one frame may pass that frame once (curr and curr_pos with
        batch 1): the first layer's self-attention, which sees only the frame, then runs
        once for all of them, and the batch widens to B at the first cross-attention.
        """
        if isinstance(curr, list):
            if not isinstance(curr_pos, list) or len(curr) != 1 or len(curr_pos) != 1:
                raise ValueError("list inputs must be one-element lists for curr and curr_pos")
            curr, curr_pos = curr[0], curr_pos[0]
        if curr.shape[1] not in (1, memory.shape[1]):
            raise ValueError(f"batch sizes differ: curr {curr.shape[1]}, memory {memory.shape[1]}")

        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            # The official model adds a down-weighted copy of the encoding at the input.
            output = output + 0.1 * curr_pos
        if self.batch_first:
            output, curr_pos = output.transpose(0, 1), _transpose01(curr_pos)
            memory, memory_pos = memory.transpose(0, 1), _transpose01(memory_pos)

        for layer in self.layers:
            output = layer(
                tgt=output,
                memory=memory,
                pos=memory_pos,
                query_pos=curr_pos,
                num_k_exclude_rope=num_obj_ptr_tokens,
                grid_hw=grid_hw,
            )
        output = self.norm(output)
        return output.transpose(0, 1) if self.batch_first else output
