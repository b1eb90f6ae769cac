"""SAM two-way transformer: prompt tokens and image embedding attend to each other."""

from __future__ import annotations

import torch
from torch import nn

from masklet.modeling.attention import Attention
from masklet.modeling.common import MLP


class TwoWayAttentionBlock(nn.Module):
    """One decoder block: token self-attention, token->image cross-attention, token MLP,
    then image->token cross-attention, each followed by a residual add and a LayerNorm.

    Positional encodings are added to queries and keys of every attention, never to values.
    Submodule names follow the official checkpoints.

    Args:
        embedding_dim: token / image channel width C.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        activation: activation class of the token MLP.
        attention_downsample_rate: internal-width reduction of the cross-attentions.
        skip_first_layer_pe: for the first block, whose tokens *are* the positional
            prompt embeddings: self-attention sees them without an extra PE and its
            output replaces the tokens instead of being added to them.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries, query_pe: [B, Nq, C]; keys: [B, Nk, C]; key_pe: [B or 1, Nk, C].

        Returns updated (queries [B, Nq, C], keys [B, Nk, C]).
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        # Both cross-attentions read the image with the same (pre-update) keys.
        keys_with_pe = keys + key_pe
        q = queries + query_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, keys_with_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_with_pe, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of ``TwoWayAttentionBlock`` plus a final token->image attention.

    Args:
        depth: number of blocks.
        embedding_dim: channel width C.
        num_heads: attention heads (must divide C / attention_downsample_rate).
        mlp_dim: hidden width of the token MLPs.
        activation: activation class of the token MLPs.
        attention_downsample_rate: internal-width reduction of the cross-attentions.
    """

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder.

        Args:
            image_embedding: [B, C, H, W].
            image_pe: [B or 1, C, H, W] positional encoding of the image (batch 1 is
                broadcast, which avoids materialising one copy per prompt).
            point_embedding: [B, N, C] prompt tokens, also used as their own PE.

        Returns:
            queries: [B, N, C] processed tokens.
            keys: [B, H*W, C] processed image embedding.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)

        q = queries + point_embedding
        attn_out = self.final_attn_token_to_image(q, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys
