"""The training forward over one clip: encode its frames, prompt the first frame(s), track
the rest through memory, and correct some frames with clicks, keeping every gradient.

This follows the official ``SAM2Train.forward`` with masklet's tracking primitives
(`condition_on_memory`, `encode_memory`, `gather_memory` via the former) run in train
mode: memories stay in the computed dtype so gradients flow through them, the memory
bank uses temporal stride 1 and attends to prompted frames in the future too.
"""

from __future__ import annotations

import numpy as np
import torch

from masklet.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from masklet.tracking.state import FrameOutput
from masklet.tracking.step import condition_on_memory, encode_memory
from masklet.train.config import PromptConfig
from masklet.train.losses import DecoderPass
from masklet.train.prompts import (
    Points,
    PromptPlan,
    add_points,
    initial_prompt,
    sample_clicks,
)


def _first_pass(
    model: SAM2Model,
    feats: ImageFeatures,
    frame_idx: int,
    is_init: bool,
    points: Points | None,
    mask_prompt: torch.Tensor | None,
    memory: tuple[dict[int, FrameOutput], dict[int, FrameOutput]],
    num_frames: int,
) -> tuple[SamHeadOutput, torch.Tensor | None]:
    """The frame's first prediction and its memory-conditioned features (None when a mask
    prompt is used directly as the output, as the official model does)."""
    high_res = feats.high_res_feats or None
    if mask_prompt is not None and model.config.use_mask_input_as_output_without_sam:
        return model.use_mask_as_output(feats.image_embed, high_res, mask_prompt), None
    cond, non_cond = memory
    pix = condition_on_memory(model, feats, frame_idx, is_init, cond, non_cond, num_frames,
                              reverse=False)
    num_points = 0 if points is None else points[1].shape[1]
    out = model.forward_sam_heads(
        pix, high_res, points=points, mask_inputs=mask_prompt,
        multimask_output=model.use_multimask(is_init, num_points),
    )
    return out, pix


def _as_pass(out: SamHeadOutput) -> DecoderPass:
    return DecoderPass(out.high_res_multimasks, out.ious, out.object_score_logits)


def _correct(
    model: SAM2Model,
    feats: ImageFeatures,
    pix: torch.Tensor,
    is_init: bool,
    points: Points | None,
    out: SamHeadOutput,
    gt: torch.Tensor,
    cfg: PromptConfig,
    rng: np.random.Generator,
) -> tuple[Points | None, SamHeadOutput, list[DecoderPass]]:
    """Add correction clicks one at a time, each decoded with the previous mask logits."""
    passes = []
    high_res = feats.high_res_feats or None
    for _ in range(cfg.num_correction_points):
        from_gt = cfg.prob_sample_from_gt > 0 and rng.random() < cfg.prob_sample_from_gt
        pred = None if from_gt else out.high_res_masks.detach() > 0
        points = add_points(points, sample_clicks(gt, pred, rng))
        out = model.forward_sam_heads(
            pix, high_res, points=points, mask_inputs=out.low_res_masks,
            multimask_output=model.use_multimask(is_init, points[1].shape[1]),
        )
        passes.append(_as_pass(out))
    return points, out, passes


def forward_clip(
    model: SAM2Model,
    images: torch.Tensor,
    masks: torch.Tensor,
    plan: PromptPlan,
    cfg: PromptConfig,
    rng: np.random.Generator,
) -> list[list[DecoderPass]]:
    """Run the model over a clip as in training.

    Args:
        images: [T, 3, S, S] normalised frames.
        masks: [T, O, S, S] bool ground truth of O objects (prompts and corrections).
        plan: prompting decisions (see `plan_prompts`).
        rng: draws the clicks and boxes.
    Returns:
        for each frame t, its decoder passes: the first prediction, then one per
        correction click.
    """
    num_frames, num_objects = masks.shape[:2]
    all_feats = model.forward_image(images)
    cond: dict[int, FrameOutput] = {}
    non_cond: dict[int, FrameOutput] = {}
    passes: list[list[DecoderPass]] = [[] for _ in range(num_frames)]
    for t in plan.processing_order(num_frames):
        feats = all_feats.select(torch.full((num_objects,), t, device=images.device))
        gt = masks[t].unsqueeze(1)  # [O, 1, S, S]
        is_init = t in plan.init_cond_frames
        points = mask_prompt = None
        if is_init and plan.use_points:
            points = initial_prompt(gt, t in plan.box_frames, cfg, rng)
        elif is_init:
            mask_prompt = gt.to(images.dtype)
        out, pix = _first_pass(model, feats, t, is_init, points, mask_prompt,
                               (cond, non_cond), num_frames)
        passes[t].append(_as_pass(out))
        if t in plan.frames_to_correct and pix is not None:
            points, out, more = _correct(model, feats, pix, is_init, points, out, gt, cfg, rng)
            passes[t].extend(more)
        memory = encode_memory(model, feats, out.high_res_masks, out.object_score_logits,
                               is_mask_from_pts=points is not None, dtype=None)
        stored = FrameOutput(out.low_res_masks, out.obj_ptr, out.object_score_logits, memory)
        as_cond = is_init or (cfg.add_all_frames_to_correct_as_cond
                              and t in plan.frames_to_correct)
        (cond if as_cond else non_cond)[t] = stored
    return passes
