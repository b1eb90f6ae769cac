"""One tracking step: condition a frame on memory, decode its mask, encode a new memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from masklet.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from masklet.postprocess import fill_holes
from masklet.tracking.memory_bank import MemoryInputs, Outputs, gather_memory
from masklet.tracking.motion import FRESH, MotionChoice, MotionConfig, MotionState
from masklet.tracking.motion_heads import decode_heads, mask_as_output
from masklet.tracking.state import FrameOutput, PointPrompt

# Stored memories are kept in bf16, as in the official predictor; matching it keeps
# results identical to the reference and halves the memory bank's size.
MEMORY_DTYPE = torch.bfloat16
# Logit written into filled holes of shown masks (the official video predictor's value).
HOLE_FILL_LOGIT = 0.1


def _seq_first(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [HW, B, C]."""
    return x.flatten(2).permute(2, 0, 1)


def condition_on_memory(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    is_init_cond_frame: bool,
    cond: Outputs,
    non_cond: Outputs,
    num_frames: int | None,
    reverse: bool,
    motion: MotionConfig | None = None,
) -> torch.Tensor:
    """The frame's lowest-resolution features fused with the object's memory: [B, C, H, W].

    ``motion``: motion-aware tracking's options (they choose the tracked memories)."""
    b, c = feats.image_embed.shape[:2]
    if model.num_maskmem == 0:
        return feats.image_embed
    if is_init_cond_frame and model.config.directly_add_no_mem_embed:
        return feats.image_embed + model.no_mem_embed.view(1, c, 1, 1)
    if is_init_cond_frame:
        # A dummy memory token so attention has something to attend to.
        mem = MemoryInputs(model.no_mem_embed.expand(1, b, model.mem_dim),
                           model.no_mem_pos_enc.expand(1, b, model.mem_dim), 0)
    else:
        mem = gather_memory(model, frame_idx, cond, non_cond, num_frames, reverse, b,
                            feats.image_embed.device, motion)
    return attend_memory(model, feats, mem)


def attend_memory(model: SAM2Model, feats: ImageFeatures, mem: MemoryInputs) -> torch.Tensor:
    """Memory attention of a frame over B memories -> [B, C, H, W].

    ``feats`` has batch B, or batch 1 when B objects share the frame: it then goes through
    the first layer's self-attention once for all of them.
    """
    _, c, h, w = feats.image_embed.shape
    out = model.memory_attention(
        curr=_seq_first(feats.image_embed), curr_pos=_seq_first(feats.pos_enc),
        memory=mem.memory, memory_pos=mem.memory_pos,
        num_obj_ptr_tokens=mem.num_obj_ptr_tokens, grid_hw=(h, w),
    )
    return out.permute(1, 2, 0).reshape(-1, c, h, w)


def decode_frame(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    is_init_cond_frame: bool,
    points: PointPrompt | None,
    mask_inputs: torch.Tensor | None,
    cond: Outputs,
    non_cond: Outputs,
    num_frames: int | None,
    reverse: bool,
    prev_mask_logits: torch.Tensor | None = None,
) -> SamHeadOutput:
    """Masks of B objects on one frame from their prompts and memory.

    Args:
        feats: the frame's features, batch B (expanded over objects).
        points: clicks of the objects on this frame, or None.
        mask_inputs: [B, 1, S, S] mask prompt, used directly as the output when the
            model says so (official behaviour), or None.
        prev_mask_logits: [B, 1, h, w] earlier logits on this frame, fed with new clicks.
    """
    high_res = feats.high_res_feats or None
    if mask_inputs is not None and model.config.use_mask_input_as_output_without_sam:
        return model.use_mask_as_output(feats.image_embed, high_res, mask_inputs)
    pix = condition_on_memory(model, feats, frame_idx, is_init_cond_frame, cond, non_cond,
                              num_frames, reverse)
    pts, mask_inputs, multimask = _head_inputs(model, is_init_cond_frame, points, mask_inputs,
                                               prev_mask_logits)
    return model.forward_sam_heads(pix, high_res, points=pts, mask_inputs=mask_inputs,
                                   multimask_output=multimask)


def _head_inputs(
    model: SAM2Model,
    is_init_cond_frame: bool,
    points: PointPrompt | None,
    mask_inputs: torch.Tensor | None,
    prev_mask_logits: torch.Tensor | None,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, bool]:
    """(points as (coords, labels), the mask input, multimask) for the SAM heads: earlier
    logits on the frame go in with new clicks; several candidates only where the model
    asks for them (first clicks on an initial frame)."""
    if prev_mask_logits is not None:
        mask_inputs = prev_mask_logits
    num_points = 0 if points is None else points.num_points
    multimask = model.use_multimask(is_init_cond_frame, num_points)
    pts = None if points is None else (points.coords, points.labels)
    return pts, mask_inputs, multimask


def encode_memory(
    model: SAM2Model,
    feats: ImageFeatures,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    is_mask_from_pts: bool | torch.Tensor,
    *,
    dtype: torch.dtype | None = MEMORY_DTYPE,
) -> torch.Tensor:
    """A new memory from a frame's features and mask logits [B, 1, S, S] -> [B, mem, H, W]
    (or [B, tokens, mem] latents when the model has a spatial perceiver).

    ``dtype``: storage dtype of the memory (bf16 for inference parity); training passes
    None to keep the computed dtype, so gradients through memories are not rounded.
    """
    c = model.config
    masks = high_res_masks
    if c.non_overlap_masks_for_mem_enc and not model.training:
        masks = non_overlapping(masks)
    binarize = c.binarize_mask_from_pts_for_mem_enc and not model.training
    if binarize and isinstance(is_mask_from_pts, torch.Tensor):
        # ONNX export: the flag is a [1] 0/1 graph input, so both cases are in the graph.
        probs = torch.where(is_mask_from_pts > 0, (masks > 0).float(), torch.sigmoid(masks))
    elif binarize and is_mask_from_pts:
        probs = (masks > 0).float()  # clicked frames are remembered exactly as shown
    else:
        probs = torch.sigmoid(masks)
    probs = probs * c.sigmoid_scale_for_mem_enc + c.sigmoid_bias_for_mem_enc
    out = model.memory_encoder(feats.image_embed, probs, skip_mask_sigmoid=True)
    features = out.vision_features
    if model.no_obj_embed_spatial is not None:
        absent = 1.0 - (object_score_logits > 0).float()  # [B, 1]
        features = features + absent[..., None, None] * model.no_obj_embed_spatial[..., None, None]
    if model.spatial_perceiver is not None:
        # EdgeTAM keeps [B, tokens, mem_dim] latents instead of the map (see perceiver.py).
        features, _ = model.spatial_perceiver(features, out.vision_pos_enc[0])
    return features if dtype is None else features.to(dtype)


def non_overlapping(masks: torch.Tensor) -> torch.Tensor:
    """Keep each pixel only for its highest-scoring object; others are pushed below -10.

    masks: [B, 1, H, W] logits of B objects of the same frame.
    """
    if masks.shape[0] == 1:
        return masks
    winner = torch.argmax(masks, dim=0, keepdim=True)
    ids = torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(winner == ids, masks, masks.clamp(max=-10.0))


def track_frame(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    is_init_cond_frame: bool,
    points: PointPrompt | None,
    mask_inputs: torch.Tensor | None,
    cond: Outputs,
    non_cond: Outputs,
    num_frames: int | None,
    reverse: bool,
    *,
    run_mem_encoder: bool,
    fill_hole_area: int,
    prev_mask_logits: torch.Tensor | None = None,
    motion: MotionConfig | None = None,
    motion_prior: MotionState = FRESH,
) -> FrameOutput:
    """`decode_frame`, then (optionally) its memory, and the shown low-res logits with small
    holes filled: the per-object step shared by the offline and streaming predictors.

    ``motion``: track motion-aware (SAMURAI), continuing the filter ``motion_prior``.
    """
    choice = None
    if motion is None:
        sam = decode_frame(model, feats, frame_idx, is_init_cond_frame, points, mask_inputs,
                           cond, non_cond, num_frames, reverse, prev_mask_logits)
        iou = sam.ious.max(dim=-1).values  # the decoder keeps its best-IoU candidate
    else:
        sam, choice = decode_frame_with_motion(
            model, feats, frame_idx, is_init_cond_frame, points, mask_inputs, cond, non_cond,
            num_frames, reverse, prev_mask_logits, motion, motion_prior)
        iou = sam.ious[:, choice.index]
    memory = None
    if run_mem_encoder and model.num_maskmem > 0:
        # Encoded from the decoder's own mask, before hole filling (official order).
        memory = encode_memory(model, feats, sam.high_res_masks, sam.object_score_logits,
                               is_mask_from_pts=points is not None)
    shown = sam.low_res_masks
    if fill_hole_area > 0:
        shown = fill_holes(shown, fill_hole_area, fill_value=HOLE_FILL_LOGIT)
    if choice is None:
        return FrameOutput(shown, sam.obj_ptr, sam.object_score_logits, memory, iou)
    return FrameOutput(shown, sam.obj_ptr, sam.object_score_logits, memory, iou,
                       choice.motion_score, choice.state, choice.index)


def decode_frame_with_motion(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    is_init_cond_frame: bool,
    points: PointPrompt | None,
    mask_inputs: torch.Tensor | None,
    cond: Outputs,
    non_cond: Outputs,
    num_frames: int | None,
    reverse: bool,
    prev_mask_logits: torch.Tensor | None,
    motion: MotionConfig,
    prior: MotionState,
) -> tuple[SamHeadOutput, MotionChoice]:
    """`decode_frame` for one object under motion-aware tracking: memories chosen by
    SAMURAI's rule, the candidate by its motion filter (``prior``: the filter so far).

    A prompted decode (points or a mask) records its filter as direction-free (a pass
    in either direction may continue it); a tracked one records the pass's direction.
    """
    high_res = feats.high_res_feats or None
    if mask_inputs is not None and model.config.use_mask_input_as_output_without_sam:
        out = mask_as_output(model, feats.image_embed, high_res, mask_inputs, motion)
        return out, MotionChoice(0, None, prior)
    direction = None if (points is not None or mask_inputs is not None) else reverse
    pix = condition_on_memory(model, feats, frame_idx, is_init_cond_frame, cond, non_cond,
                              num_frames, reverse, motion)
    pts, mask_inputs, multimask = _head_inputs(model, is_init_cond_frame, points, mask_inputs,
                                               prev_mask_logits)
    return decode_heads(model, pix, high_res, pts, mask_inputs, multimask, motion, prior,
                        direction)


def memory_of_prompted(model: SAM2Model, feats: ImageFeatures, out: FrameOutput) -> torch.Tensor:
    """Memory of a prompted / corrected output, from the mask the user saw (binarised)."""
    size = model.image_size
    high = F.interpolate(out.pred_masks.to(feats.image_embed.device), size=(size, size),
                         mode="bilinear", align_corners=False)
    return encode_memory(model, feats, high, out.object_score_logits, is_mask_from_pts=True)
