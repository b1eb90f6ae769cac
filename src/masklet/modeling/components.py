"""Builds each SAM 2 component from a `ModelConfig` (the one place sizes turn into modules)."""

from __future__ import annotations

from torch import nn

from masklet.config import ModelConfig, RepViTConfig
from masklet.modeling.hiera import Hiera
from masklet.modeling.image_encoder import FpnNeck, ImageEncoder
from masklet.modeling.mask_decoder import MaskDecoder
from masklet.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from masklet.modeling.memory_encoder import (
    CXBlock,
    Fuser,
    MaskDownSampler,
    MemoryEncoder,
)
from masklet.modeling.perceiver import SpatialPerceiver
from masklet.modeling.position_encoding import PositionEmbeddingSine
from masklet.modeling.prompt_encoder import PromptEncoder
from masklet.modeling.repvit import RepViT
from masklet.modeling.rope import RoPEAttention
from masklet.modeling.split_rope import SplitGridRoPEAttention
from masklet.modeling.transformer import TwoWayTransformer


def build_trunk(c: ModelConfig) -> nn.Module:
    """The configured trunk: Hiera (SAM 2) or RepViT (EdgeTAM)."""
    t = c.trunk
    if isinstance(t, RepViTConfig):
        return RepViT(embed_dim=t.embed_dim, depth=t.depth, mlp_ratio=t.mlp_ratio,
                      kernel_size=t.kernel_size)
    return Hiera(
        embed_dim=t.embed_dim,
        num_heads=t.num_heads,
        stages=t.stages,
        global_att_blocks=t.global_att_blocks,
        window_pos_embed_bkg_spatial_size=t.window_pos_embed_bkg_spatial_size,
        window_spec=t.window_spec,
        q_pool=t.q_pool,
        drop_path_rate=t.drop_path_rate,
    )


def build_image_encoder(c: ModelConfig) -> ImageEncoder:
    t = c.trunk
    trunk = build_trunk(c)
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=c.d_model),
        d_model=c.d_model,
        backbone_channel_list=list(t.channel_list),
        fpn_top_down_levels=[2, 3],  # levels 0 and 1 use the trunk features directly
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


def _rope_attention(c: ModelConfig, *, kv_in_dim: int | None, k_repeat: bool) -> RoPEAttention:
    m = c.memory
    return RoPEAttention(
        embedding_dim=c.d_model,
        num_heads=1,
        downsample_rate=1,
        dropout=m.attention_dropout,
        kv_in_dim=kv_in_dim,
        rope_theta=m.rope_theta,
        rope_k_repeat=k_repeat,
        feat_sizes=(c.feat_size, c.feat_size),
    )


def _memory_cross_attention(c: ModelConfig) -> RoPEAttention:
    """Cross-attention to memories: one rotary grid for both sides (SAM 2), or, when a
    perceiver compresses memories (EdgeTAM), the frame grid for queries and the
    perceiver's 2D latent grid for keys."""
    if c.perceiver is None:
        return _rope_attention(c, kv_in_dim=c.memory.mem_dim, k_repeat=True)
    m, side = c.memory, c.perceiver.grid_side
    return SplitGridRoPEAttention(
        k_sizes=(side, side),
        k_tokens_per_frame=c.perceiver.tokens_per_frame,
        embedding_dim=c.d_model,
        num_heads=1,
        dropout=m.attention_dropout,
        kv_in_dim=m.mem_dim,
        rope_theta=m.rope_theta,
        feat_sizes=(c.feat_size, c.feat_size),
    )


def build_memory_attention(c: ModelConfig) -> MemoryAttention:
    m = c.memory
    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=_memory_cross_attention(c),
        d_model=c.d_model,
        dim_feedforward=m.attention_ffn_dim,
        dropout=m.attention_dropout,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=_rope_attention(c, kv_in_dim=None, k_repeat=False),
    )
    return MemoryAttention(
        d_model=c.d_model, pos_enc_at_input=True, layer=layer, num_layers=m.attention_layers
    )


def build_memory_encoder(c: ModelConfig) -> MemoryEncoder:
    m = c.memory
    block = CXBlock(
        dim=c.d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True
    )
    return MemoryEncoder(
        out_dim=m.mem_dim,
        mask_downsampler=MaskDownSampler(
            kernel_size=3, stride=2, padding=1, total_stride=c.backbone_stride,
            embed_dim=c.d_model,
        ),
        fuser=Fuser(layer=block, num_layers=m.fuser_layers),
        position_encoding=PositionEmbeddingSine(num_pos_feats=m.mem_dim),
        in_dim=c.d_model,
    )


def build_spatial_perceiver(c: ModelConfig) -> SpatialPerceiver | None:
    """EdgeTAM's memory compressor, or None for SAM 2 models."""
    p = c.perceiver
    if p is None:
        return None
    return SpatialPerceiver(
        dim=c.memory.mem_dim, depth=p.depth, num_latents=p.num_latents,
        num_latents_2d=p.num_latents_2d, dim_head=p.dim_head, heads=p.heads,
        ff_mult=p.ff_mult, use_self_attn=p.use_self_attn,
    )


def build_prompt_encoder(c: ModelConfig) -> PromptEncoder:
    return PromptEncoder(
        embed_dim=c.d_model,
        image_embedding_size=(c.feat_size, c.feat_size),
        input_image_size=(c.image_size, c.image_size),
        mask_in_chans=16,
    )


def build_mask_decoder(c: ModelConfig) -> MaskDecoder:
    transformer = TwoWayTransformer(depth=2, embedding_dim=c.d_model, mlp_dim=2048, num_heads=8)
    return MaskDecoder(
        transformer_dim=c.d_model,
        transformer=transformer,
        num_multimask_outputs=3,
        activation=nn.GELU,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=c.use_high_res_features_in_sam,
        iou_prediction_use_sigmoid=c.iou_prediction_use_sigmoid,
        dynamic_multimask_via_stability=c.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=c.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=c.dynamic_multimask_stability_thresh,
        pred_obj_scores=c.pred_obj_scores,
        pred_obj_scores_mlp=c.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=c.use_multimask_token_for_obj_ptr,
    )
