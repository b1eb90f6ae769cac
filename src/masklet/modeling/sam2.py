"""The SAM 2 model: its parameters (named as in the official checkpoints) and per-frame primitives.

`SAM2Model` owns every weight of an official checkpoint and offers the steps a
predictor composes: encode an image, run the prompt encoder and mask decoder on
(optionally memory-conditioned) features, turn a mask prompt directly into an
output. Memory-bank assembly and the tracking loop live in `masklet.tracking`,
and the user-facing predictors wrap this module rather than subclassing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from masklet.config import ModelConfig
from masklet.modeling.common import MLP
from masklet.modeling.components import (
    build_image_encoder,
    build_mask_decoder,
    build_memory_attention,
    build_memory_encoder,
    build_prompt_encoder,
    build_spatial_perceiver,
)

# Logit given to every pixel of an object judged absent (the official NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0


@dataclass
class ImageFeatures:
    """Encoder output of a batch of B images, ready for the decoder.

    Attributes:
        image_embed: [B, C, H, W] lowest-resolution features (C=256, H=W=image_size/16).
        high_res_feats: two maps [B, 32, 4H, 4W] and [B, 64, 2H, 2W], already passed
            through the decoder's conv_s0 / conv_s1 (empty list if the model has none).
        pos_enc: [B, C, H, W] sine position encoding of ``image_embed``.
    """

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor]
    pos_enc: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.image_embed.shape[0]

    def select(self, idx: int | torch.Tensor) -> ImageFeatures:
        """The features of one image (or an index tensor of images), keeping the batch dim."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return ImageFeatures(
            self.image_embed[idx], [f[idx] for f in self.high_res_feats], self.pos_enc[idx]
        )


@dataclass
class SamHeadOutput:
    """Outputs of the prompt encoder + mask decoder for B prompts (M = 3 or 1 masks each).

    Attributes:
        low_res_multimasks: [B, M, 4H, 4W] mask logits (256x256 at 1024 px).
        high_res_multimasks: [B, M, S, S] logits upsampled to the model's input size S.
        ious: [B, M] predicted IoU of each mask.
        low_res_masks: [B, 1, 4H, 4W] the chosen mask (best IoU when M = 3).
        high_res_masks: [B, 1, S, S] the chosen mask at input size.
        obj_ptr: [B, C] object pointer from the chosen mask's output token.
        object_score_logits: [B, 1] logit that the object is present.
    """

    low_res_multimasks: torch.Tensor
    high_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


class SAM2Model(nn.Module):
    """SAM 2 with the official parameter names, built from a `ModelConfig`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.hidden_dim = c.d_model
        self.mem_dim = c.memory.mem_dim
        self.num_maskmem = c.memory.num_maskmem
        self.image_size = c.image_size
        self.image_encoder = build_image_encoder(c)
        self.memory_attention = build_memory_attention(c)
        self.memory_encoder = build_memory_encoder(c)
        self.sam_prompt_encoder = build_prompt_encoder(c)
        self.sam_mask_decoder = build_mask_decoder(c)
        # EdgeTAM: compresses each new memory; None for SAM 2 (config.perceiver).
        self.spatial_perceiver = build_spatial_perceiver(c)
        self._init_memory_parameters(c)
        self._init_pointer_parameters(c)

    def _init_memory_parameters(self, c: ModelConfig) -> None:
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(self.num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            nn.init.trunc_normal_(p, std=0.02)
        if c.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)
        else:
            self.no_obj_embed_spatial = None

    def _init_pointer_parameters(self, c: ModelConfig) -> None:
        d = self.hidden_dim
        if c.use_obj_ptrs_in_encoder:
            # Brings a mask prompt to the decoder's low-res logit scale to derive a pointer.
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
            self.obj_ptr_proj = MLP(d, d, d, 3) if c.use_mlp_for_obj_ptr_proj else nn.Linear(d, d)
        else:
            self.obj_ptr_proj = nn.Identity()
        if c.pred_obj_scores and c.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
            nn.init.trunc_normal_(self.no_obj_ptr, std=0.02)
        if c.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(d, self.mem_dim)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ image
    def forward_image(self, images: torch.Tensor) -> ImageFeatures:
        """Encode a batch of preprocessed images.

        Args:
            images: [B, 3, S, S] normalised images at the model's input size S.
        Returns:
            ImageFeatures without the no-memory embedding (the raw per-frame features).
        """
        enc = self.image_encoder(images)
        fpn = list(enc.backbone_fpn)
        high_res: list[torch.Tensor] = []
        if self.config.use_high_res_features_in_sam:
            # Projected once per image instead of once per click.
            high_res = [
                self.sam_mask_decoder.conv_s0(fpn[0]),
                self.sam_mask_decoder.conv_s1(fpn[1]),
            ]
        return ImageFeatures(fpn[-1], high_res, enc.vision_pos_enc[-1])

    def add_no_mem_embed(self, feats: ImageFeatures) -> ImageFeatures:
        """Features for a frame decoded without memory (an image, or a first prompted frame)."""
        if not self.config.directly_add_no_mem_embed:
            return feats
        embed = feats.image_embed + self.no_mem_embed.view(1, -1, 1, 1)
        return ImageFeatures(embed, feats.high_res_feats, feats.pos_enc)

    def maskmem_pos_enc(self, device: torch.device) -> torch.Tensor:
        """[1, mem_dim, H, W] position encoding of a stored memory (the same for every frame)."""
        side = self.config.feat_size
        probe = torch.empty(1, self.mem_dim, side, side, device=device, dtype=self.dtype)
        return self.memory_encoder.position_encoding(probe)

    # ------------------------------------------------------------------ heads
    def encode_prompts(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_logits: torch.Tensor | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings; no points means one padding point (label -1), as the official.

        Args:
            points: coords [B, N, 2] in input-resolution pixels and labels [B, N] int.
            mask_logits: [B, 1, 4H, 4W] dense mask prompt, or None.
        Returns:
            sparse [B, N', C] and dense [B, C, H, W] embeddings.
        """
        if points is None:
            coords = torch.zeros(batch_size, 1, 2, device=self.device)
            labels = -torch.ones(batch_size, 1, dtype=torch.int32, device=self.device)
            points = (coords, labels)
        return self.sam_prompt_encoder(points=points, boxes=None, masks=mask_logits)

    def forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> SamHeadOutput:
        """Decode masks for B prompts on B (memory-conditioned) feature maps.

        Args:
            backbone_features: [B, C, H, W].
            high_res_features: projected high-resolution maps (see ImageFeatures) or None.
            points: coords [B, N, 2] (input-resolution pixels) and labels [B, N].
            mask_inputs: [B, 1, h, w] mask prompt; resized to the decoder's 4H x 4W.
            multimask_output: decode 3 candidate masks and keep the best.
        """
        b = backbone_features.shape[0]
        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_inputs
            if tuple(mask_inputs.shape[-2:]) != tuple(size):
                mask_prompt = F.interpolate(
                    mask_inputs.float(), size=size, mode="bilinear",
                    align_corners=False, antialias=True,
                )
        sparse, dense = self.encode_prompts(points, mask_prompt, b)
        dec = self.run_mask_decoder(backbone_features, high_res_features, sparse, dense,
                                    multimask_output)
        return self._select_output(dec, multimask_output)

    def run_mask_decoder(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask_output: bool,
    ):
        """The mask decoder on embedded prompts: sparse [B, N', C] and dense [B, C, H, W]
        (see `encode_prompts`) -> its raw `MaskDecoderOutput` (before `_select_output`)."""
        return self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )

    def _select_output(self, dec, multimask_output: bool) -> SamHeadOutput:
        low_multi, ious, tokens, obj_logits = (
            dec.masks, dec.iou_pred, dec.sam_tokens_out, dec.object_score_logits
        )
        present = None
        if self.config.pred_obj_scores:
            present = obj_logits > 0
            # Memories use a hard present/absent decision, consistent with the shown mask.
            low_multi = torch.where(present[:, None, None], low_multi, NO_OBJ_SCORE)
        low_multi = low_multi.float()
        high_multi = F.interpolate(
            low_multi, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(low_multi.shape[0], device=low_multi.device)
            low, high = low_multi[rows, best].unsqueeze(1), high_multi[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low, high = low_multi, high_multi
        obj_ptr = self.obj_ptr_proj(token)
        if present is not None:
            weight = obj_logits.sigmoid() if self.config.soft_no_obj_ptr else present.float()
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, weight)
        return SamHeadOutput(low_multi, high_multi, ious, low, high, obj_ptr, obj_logits)

    def _mix_no_obj_ptr(self, obj_ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Blend in the learned no-object pointer where the object is absent. present: [B, 1]."""
        if self.config.fixed_no_obj_ptr:
            obj_ptr = present * obj_ptr
        return obj_ptr + (1 - present) * self.no_obj_ptr

    def use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        mask_inputs: torch.Tensor,
        decode: Callable[[torch.Tensor], SamHeadOutput] | None = None,
    ) -> SamHeadOutput:
        """Turn a binary mask prompt [B, 1, S, S] directly into output logits (+/-10).

        The decoder still runs on the downsampled mask to produce the object pointer:
        ``decode(mask_inputs)`` ([B, 1, S/4, S/4]; default: `forward_sam_heads` on these
        features), so motion-aware tracking can pass its own decoder pass.
        """
        scale, bias = 20.0, -10.0  # sigmoid(-10) ~ 4.5e-5: effectively binary
        mask = mask_inputs.float()
        high = mask * scale + bias
        low = F.interpolate(
            high, size=(high.shape[-2] // 4, high.shape[-1] // 4),
            mode="bilinear", align_corners=False, antialias=True,
        )
        ious = mask.new_ones(mask.shape[0], 1)
        if self.config.use_obj_ptrs_in_encoder:
            if decode is None:
                def decode(low_mask: torch.Tensor) -> SamHeadOutput:
                    return self.forward_sam_heads(backbone_features, high_res_features,
                                                  mask_inputs=low_mask)
            obj_ptr = decode(self.mask_downsample(mask)).obj_ptr
        else:
            obj_ptr = mask.new_zeros(mask.shape[0], self.hidden_dim)
        # The prompt itself, not the decoder's score, decides whether the object is present.
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        obj_logits = scale * present + bias
        if self.config.pred_obj_scores:
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, present)
        return SamHeadOutput(low, high, ious, low, high, obj_ptr, obj_logits)

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """Whether the decoder should return 3 candidates for this prompt (official rule)."""
        c = self.config
        return (
            c.multimask_output_in_sam
            and (is_init_cond_frame or c.multimask_output_for_tracking)
            and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num
        )
