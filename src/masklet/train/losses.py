"""SAM 2 training losses (the official MultiStepMultiMasksAndIous, written anew).

For every frame and every decoder pass on it (the first prediction and each correction
click), with M candidate masks per object:

- focal and dice losses of each candidate against the ground truth; only the candidate
  with the lowest ``20 * focal + dice`` is trained (SAM's multimask recipe);
- an L1 loss between the predicted IoU and the candidate's actual IoU with the ground
  truth (all candidates with ``supervise_all_iou``, else the chosen one);
- these three only for objects present on the frame, plus a cross-entropy on the
  object-score logit for every object.

Terms are summed over frames, passes and objects; the caller divides by the number of
objects in the (global) batch, which is what the official loss does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from masklet.train.config import LossConfig

TERM_NAMES = ("loss_mask", "loss_dice", "loss_iou", "loss_class")


@dataclass
class DecoderPass:
    """One decoder pass on a frame, as the loss sees it (O objects, M candidates).

    Attributes:
        multimasks: [O, M, S, S] mask logits at the model's input size.
        ious: [O, M] predicted IoUs.
        object_score_logits: [O, 1] object-presence logits.
    """

    multimasks: torch.Tensor
    ious: torch.Tensor
    object_score_logits: torch.Tensor


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, gamma: float
) -> torch.Tensor:
    """RetinaNet focal loss averaged over the last two dims: [O, M, H, W] -> [O, M].

    ``alpha < 0`` disables class weighting; ``gamma = 0`` gives plain cross-entropy.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma if gamma != 0 else ce
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss (L1 form, valid for soft targets) with +1 smoothing: -> [O, M]."""
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    total = prob.sum(-1) + targets.sum(-1)
    overlap = total - (prob - targets).abs().sum(-1)  # = 2 * sum(p * t) for binary targets
    return 1 - (overlap + 1) / (total + 1)


def actual_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks (logit > 0) with the targets: -> [O, M], no gradient."""
    pred = logits.detach().flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


@dataclass
class LossTerms:
    """Summed (not yet normalised) loss terms, scalars."""

    loss_mask: torch.Tensor
    loss_dice: torch.Tensor
    loss_iou: torch.Tensor
    loss_class: torch.Tensor

    def __add__(self, other: LossTerms) -> LossTerms:
        return LossTerms(*(getattr(self, n) + getattr(other, n) for n in TERM_NAMES))

    def weighted_total(self, cfg: LossConfig) -> torch.Tensor:
        return (
            cfg.mask_weight * self.loss_mask
            + cfg.dice_weight * self.loss_dice
            + cfg.iou_weight * self.loss_iou
            + cfg.class_weight * self.loss_class
        )

    def as_floats(self, scale: float = 1.0) -> dict[str, float]:
        return {n: float(getattr(self, n)) * scale for n in TERM_NAMES}


def pass_losses(step: DecoderPass, target: torch.Tensor, cfg: LossConfig) -> LossTerms:
    """Loss terms of one decoder pass.

    Args:
        step: the pass's outputs for O objects.
        target: [O, 1, S, S] ground-truth masks (bool or float).
    """
    masks = step.multimasks.float()
    target = target.to(masks.dtype).expand_as(masks)
    focal = sigmoid_focal_loss(masks, target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    dice = dice_loss(masks, target)
    iou_err = (step.ious.float() - actual_iou(masks, target))
    iou_err = iou_err.abs() if cfg.iou_use_l1_loss else iou_err.square()
    if masks.shape[1] > 1:
        best = torch.argmin(cfg.mask_weight * focal + cfg.dice_weight * dice, dim=-1, keepdim=True)
        focal, dice = focal.gather(1, best), dice.gather(1, best)
        iou_err = (
            iou_err.mean(-1, keepdim=True) if cfg.supervise_all_iou else iou_err.gather(1, best)
        )
    present = target[:, 0].flatten(1).any(-1, keepdim=True).to(masks.dtype)  # [O, 1]
    score_loss = F.binary_cross_entropy_with_logits(
        step.object_score_logits.float(), present, reduction="sum"
    )
    return LossTerms(
        loss_mask=(focal * present).sum(),
        loss_dice=(dice * present).sum(),
        loss_iou=(iou_err * present).sum(),
        loss_class=score_loss,
    )


def clip_losses(
    passes_per_frame: list[list[DecoderPass]], targets: torch.Tensor, cfg: LossConfig
) -> LossTerms:
    """Loss terms summed over the frames of a clip and the passes on each frame.

    Args:
        passes_per_frame: for each frame t, its decoder passes (first one first).
        targets: [T, O, S, S] ground-truth masks.
    """
    total: LossTerms | None = None
    for t, passes in enumerate(passes_per_frame):
        for step in passes:
            terms = pass_losses(step, targets[t].unsqueeze(1), cfg)
            total = terms if total is None else total + terms
    if total is None:
        raise ValueError("clip_losses needs at least one decoder pass")
    return total
