"""The SAM heads of one object under motion-aware tracking.

The same prompt encoder and mask decoder as `SAM2Model.forward_sam_heads`, with the two
differences SAMURAI makes: the candidate is chosen by `choose_candidate` (predicted IoU
and motion) instead of predicted IoU alone, and the object counts as present above
``MotionConfig.present_logit`` instead of above 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from masklet.modeling.sam2 import NO_OBJ_SCORE, SAM2Model, SamHeadOutput
from masklet.tracking.motion import MotionChoice, MotionConfig, MotionState, choose_candidate


def _mask_prompt(model: SAM2Model, mask_inputs: torch.Tensor | None) -> torch.Tensor | None:
    size = tuple(model.sam_prompt_encoder.mask_input_size)
    if mask_inputs is None or tuple(mask_inputs.shape[-2:]) == size:
        return mask_inputs
    return F.interpolate(mask_inputs.float(), size=size, mode="bilinear", align_corners=False,
                         antialias=True)


def decode_heads(
    model: SAM2Model,
    pix: torch.Tensor,
    high_res: list[torch.Tensor] | None,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    mask_inputs: torch.Tensor | None,
    multimask: bool,
    config: MotionConfig,
    prior: MotionState,
    reverse: bool | None,
) -> tuple[SamHeadOutput, MotionChoice]:
    """Decode one object's masks and choose among them with its motion filter.

    Args:
        pix: [1, C, H, W] (memory-conditioned) features of the frame.
        points: coords [1, N, 2] and labels [1, N], or None.
        mask_inputs: [1, 1, h, w] dense mask prompt (earlier logits), or None.
        prior: the filter before this frame; reverse: the pass's direction (None: prompt).
    Returns:
        the heads' outputs (chosen mask and pointer) and the choice with the new filter.
    """
    if pix.shape[0] != 1:
        raise ValueError(f"motion-aware decoding takes one object at a time, got {pix.shape[0]}")
    sparse, dense = model.encode_prompts(points, _mask_prompt(model, mask_inputs), 1)
    dec = model.sam_mask_decoder(
        image_embeddings=pix, image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask, repeat_image=False, high_res_features=high_res,
    )
    low_multi, ious, tokens, obj_logits = (dec.masks, dec.iou_pred, dec.sam_tokens_out,
                                           dec.object_score_logits)
    present = None
    if model.config.pred_obj_scores:
        present = obj_logits > config.present_logit
        low_multi = torch.where(present[:, None, None], low_multi, NO_OBJ_SCORE)
    low_multi = low_multi.float()
    size = (model.image_size, model.image_size)
    high_multi = F.interpolate(low_multi, size=size, mode="bilinear", align_corners=False)
    choice = choose_candidate(config, prior, high_multi[0], ious[0], reverse)
    k = choice.index
    token = tokens[:, k] if tokens.shape[1] > 1 else tokens[:, 0]
    obj_ptr = model.obj_ptr_proj(token)
    if present is not None:
        weight = obj_logits.sigmoid() if model.config.soft_no_obj_ptr else present.float()
        obj_ptr = model._mix_no_obj_ptr(obj_ptr, weight)
    out = SamHeadOutput(low_multi, high_multi, ious, low_multi[:, k : k + 1],
                        high_multi[:, k : k + 1], obj_ptr, obj_logits)
    return out, choice


def mask_as_output(model: SAM2Model, pix: torch.Tensor, high_res: list[torch.Tensor] | None,
                   mask_inputs: torch.Tensor, config: MotionConfig) -> SamHeadOutput:
    """`SAM2Model.use_mask_as_output` with the motion option's presence threshold in the
    decoder pass that derives the object pointer (one object, [1, 1, S, S] binary mask)."""

    def decode(low_mask: torch.Tensor) -> SamHeadOutput:
        return decode_heads(model, pix, high_res, None, low_mask, False, config, MotionState(),
                            None)[0]

    return model.use_mask_as_output(pix, high_res, mask_inputs, decode=decode)
