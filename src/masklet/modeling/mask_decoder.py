"""SAM mask decoder: output tokens + prompt tokens + image embedding -> mask logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from masklet.modeling.common import MLP, LayerNorm2d

# Without an object-score head every object is taken as present: sigmoid(10) ~ 1.
_DEFAULT_OBJECT_SCORE_LOGIT = 10.0


@dataclass
class MaskDecoderOutput:
    """Result of ``MaskDecoder.forward``; M is 3 with multimask output, else 1.

    masks: [B, M, 4*H, 4*W] mask logits.
    iou_pred: [B, M] predicted mask quality.
    sam_tokens_out: [B, M or 1, C] output token(s) that become the object pointer.
    object_score_logits: [B, 1] logit that the object is present.
    """

    masks: torch.Tensor
    iou_pred: torch.Tensor
    sam_tokens_out: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    """Predicts masks from image and prompt embeddings with a two-way transformer.

    Output token 0 predicts a single mask, tokens 1..num_multimask_outputs the ambiguity-
    resolving multimask set. With ``dynamic_multimask_via_stability`` (eval only), a
    single-mask request falls back to the best multimask output when mask 0 is unstable.
    Submodule names follow the official checkpoints.

    Args:
        transformer_dim: channel width C.
        transformer: the two-way transformer (image, image_pe, tokens) -> (tokens, image).
        num_multimask_outputs: masks predicted in multimask mode.
        activation: activation class of the upscaling path.
        iou_head_depth, iou_head_hidden_dim: shape of the mask-quality MLP.
        use_high_res_features: add stride-4/8 backbone features while upscaling; the
            ``conv_s0``/``conv_s1`` projections live here but are applied by the caller.
        iou_prediction_use_sigmoid: squash IoU predictions to [0, 1].
        dynamic_multimask_via_stability, dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh: single-mask fallback settings.
        pred_obj_scores: predict an object-presence logit from an extra token.
        pred_obj_scores_mlp: use a 3-layer MLP instead of a Linear for that logit.
        use_multimask_token_for_obj_ptr: in multimask mode, return the multimask tokens
            (not the single-mask token) as ``sam_tokens_out``.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            activation(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(dim, dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(dim, 1)
            )

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> MaskDecoderOutput:
        """Predict masks for B prompts.

        Args:
            image_embeddings: [B, C, H, W], or [1, C, H, W] shared by all prompts when
                ``repeat_image`` is set.
            image_pe: [1, C, H, W] from ``PromptEncoder.get_dense_pe()``.
            sparse_prompt_embeddings: [B, N, C].
            dense_prompt_embeddings: [B, C, H, W] (or broadcastable to it).
            multimask_output: return the 3 multimask outputs instead of one mask.
            repeat_image: reuse each image embedding for several consecutive prompts.
            high_res_features: [feat_s0 [B, C/8, 4H, 4W], feat_s1 [B, C/4, 2H, 2W]],
                already projected by ``conv_s0``/``conv_s1``; required iff
                ``use_high_res_features``.
        """
        hs, image = self._transform(image_embeddings, image_pe, sparse_prompt_embeddings,
                                    dense_prompt_embeddings, repeat_image)
        mask_slice = self._mask_slice(multimask_output, self._dynamic(multimask_output))
        masks = self._predict_masks(image, self._mask_tokens_out(hs), mask_slice,
                                    high_res_features)
        return self._outputs(hs, masks, mask_slice, multimask_output)

    def forward_both(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[MaskDecoderOutput, MaskDecoderOutput]:
        """The multimask and the single-mask outputs of one transformer pass.

        Each equals ``forward`` with that ``multimask_output`` (and ``repeat_image``
        False); the exported decoder graph returns both and the runtime picks per call,
        so the two-way transformer and the upscaling run once, not twice.
        """
        hs, image = self._transform(image_embeddings, image_pe, sparse_prompt_embeddings,
                                    dense_prompt_embeddings, False)
        every = slice(0, self.num_mask_tokens)
        masks = self._predict_masks(image, self._mask_tokens_out(hs), every, high_res_features)
        return self._outputs(hs, masks, every, True), self._outputs(hs, masks, every, False)

    def _dynamic(self, multimask_output: bool) -> bool:
        """Whether a single-mask request may fall back to a multimask output (eval only)."""
        return not multimask_output and self.dynamic_multimask_via_stability and not self.training

    def _transform(self, image_embeddings, image_pe, sparse, dense, repeat_image):
        """The two-way transformer: -> (hs [B, T + N, C] token outputs, image [B, C, H, W])."""
        num_prompts = sparse.shape[0]
        src = self._prepare_image(image_embeddings, dense, num_prompts, repeat_image)
        tokens = self._prepare_tokens(sparse)
        height, width = src.shape[-2:]
        hs, src = self.transformer(src, image_pe, tokens)
        return hs, src.transpose(1, 2).reshape(num_prompts, -1, height, width)

    def _mask_tokens_out(self, hs: torch.Tensor) -> torch.Tensor:
        """The mask tokens' outputs: [B, num_mask_tokens, C]."""
        first = 2 if self.pred_obj_scores else 1
        return hs[:, first : first + self.num_mask_tokens, :]

    def _outputs(
        self, hs: torch.Tensor, masks: torch.Tensor, computed: slice, multimask_output: bool
    ) -> MaskDecoderOutput:
        """The output for ``multimask_output`` from the transformer's token outputs ``hs``
        and ``masks``, the logits of the mask tokens ``range(num_mask_tokens)[computed]``
        (a superset of the ones this output needs)."""
        num_prompts = hs.shape[0]
        dynamic = self._dynamic(multimask_output)
        needed = self._mask_slice(multimask_output, dynamic)
        start = needed.start - computed.start
        masks = masks[:, start : start + needed.stop - needed.start]
        first = 1 if self.pred_obj_scores else 0
        iou_pred = self.iou_prediction_head(hs[:, first, :])
        if dynamic:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            iou_pred = iou_pred[:, needed]

        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            object_score_logits = iou_pred.new_full((num_prompts, 1), _DEFAULT_OBJECT_SCORE_LOGIT)

        mask_tokens_out = self._mask_tokens_out(hs)
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            # The single-mask token, even for multimask output: during training objects
            # were always tracked after several clicks, i.e. through this token.
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return MaskDecoderOutput(masks, iou_pred, sam_tokens_out, object_score_logits)

    def _mask_slice(self, multimask_output: bool, dynamic: bool) -> slice:
        """Output tokens whose masks are needed (the others are never upscaled)."""
        if multimask_output:
            return slice(1, self.num_mask_tokens)
        if dynamic:
            return slice(0, self.num_mask_tokens)
        return slice(0, 1)

    @staticmethod
    def _prepare_image(
        image_embeddings: torch.Tensor,
        dense: torch.Tensor,
        num_prompts: int,
        repeat_image: bool,
    ) -> torch.Tensor:
        """Image embedding plus dense prompt, one per prompt: -> [num_prompts, C, H, W]."""
        num_images = image_embeddings.shape[0]
        if repeat_image and num_images != num_prompts:
            if num_prompts % num_images:
                raise ValueError(
                    f"cannot spread {num_images} image embeddings over {num_prompts} prompts"
                )
            # A single image broadcasts in the addition below without a copy.
            if num_images > 1:
                image_embeddings = image_embeddings.repeat_interleave(
                    num_prompts // num_images, dim=0
                )
        elif num_images != num_prompts:
            raise ValueError(
                f"{num_images} image embeddings for {num_prompts} prompts; "
                "pass repeat_image=True to share them"
            )
        return image_embeddings + dense

    def _prepare_tokens(self, sparse: torch.Tensor) -> torch.Tensor:
        """Learned output tokens followed by the prompt tokens: -> [B, T + N, C]."""
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        output_tokens = torch.cat(learned, dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
        return torch.cat([output_tokens, sparse], dim=1)

    def _upscale(
        self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """src: [B, C, H, W] -> [B, C/8, 4H, 4W], fusing high-res features if configured."""
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        feat_s0 = feat_s1 = None
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("this decoder uses high-res features; none were given")
            feat_s0, feat_s1 = high_res_features
        x = deconv1(src)
        if feat_s1 is not None:
            x = x + feat_s1
        x = deconv2(act1(norm1(x)))
        if feat_s0 is not None:
            x = x + feat_s0
        return act2(x)

    def _predict_masks(
        self,
        image: torch.Tensor,
        mask_tokens_out: torch.Tensor,
        mask_slice: slice,
        high_res_features: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Mask logits of the selected tokens.

        image: [B, C, H, W] transformer image output; mask_tokens_out:
        [B, num_mask_tokens, C] -> [B, len(mask_slice), 4H, 4W].
        """
        upscaled = self._upscale(image, high_res_features)
        # Each mask token becomes, through its own MLP, a per-pixel linear classifier.
        hyper_in = torch.stack(
            [
                self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
                for i in range(self.num_mask_tokens)[mask_slice]
            ],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        # The logits are thresholded at 0 (the mask) and +-0.05 (stability scores): under
        # bf16 autocast this last product (32 deep, a tiny share of the FLOPs) runs in
        # float32 and returns float32 logits, not ones rounded to bf16's 0.03-0.06 steps
        # at |logit| ~ 10. In float32 it is the same product as ever.
        with torch.autocast(upscaled.device.type, enabled=False):
            logits = hyper_in.float() @ upscaled.float().reshape(b, c, h * w)
        return logits.reshape(b, -1, h, w)

    def _stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU of the masks thresholded at +delta and -delta: [B, M, H, W] -> [B, M]."""
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_inner = (flat > delta).sum(dim=-1).float()
        area_outer = (flat > -delta).sum(dim=-1).float()
        # An empty outer mask cannot flicker, so it counts as perfectly stable.
        return torch.where(area_outer > 0, area_inner / area_outer, 1.0)

    def _dynamic_multimask_via_stability(
        self, all_masks: torch.Tensor, all_iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output with a fallback to the best-scored multimask output.

        all_masks: [B, num_mask_tokens, H, W]; all_iou: [B, num_mask_tokens]
        -> (masks [B, 1, H, W], iou [B, 1]).
        """
        batch_index = torch.arange(all_iou.shape[0], device=all_iou.device)
        best = all_iou[:, 1:].argmax(dim=-1) + 1
        best_masks = all_masks[batch_index, best].unsqueeze(1)
        best_iou = all_iou[batch_index, best].unsqueeze(1)
        single_masks, single_iou = all_masks[:, 0:1], all_iou[:, 0:1]
        stable = self._stability_scores(single_masks) >= self.dynamic_multimask_stability_thresh
        masks = torch.where(stable[..., None, None], single_masks, best_masks)
        iou = torch.where(stable, single_iou, best_iou)
        return masks, iou
