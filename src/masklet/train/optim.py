"""AdamW with the official parameter groups, and the learning-rate schedule.

Learning rate of a parameter = schedule(step) x group lr, where the group lr is
``vision_lr`` for ``image_encoder.*`` and ``base_lr`` otherwise, times a layer-wise decay
inside the Hiera trunk: block i of n gets ``layer_decay ** (n - i)``, the patch embedding
``layer_decay ** (n + 1)``, the position embeddings 1 (the official override).

Weight decay is 0 for biases and for the weights of ``nn.LayerNorm`` modules (not the
2-D LayerNorms of conv stacks, which the official recipe decays; masklet's ConvNeXt
block normalises channels-last with an ``nn.LayerNorm`` where the official block uses a
2-D one, so it is decayed too).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from masklet.modeling.memory_encoder import CXBlock
from masklet.train.config import OptimConfig

TRUNK_PREFIX = "image_encoder.trunk."
VISION_PREFIX = "image_encoder."


def trunk_lr_scale(name: str, num_blocks: int, decay: float) -> float:
    """Layer-decay factor of a parameter called ``name`` (full model name)."""
    if not name.startswith(TRUNK_PREFIX):
        return 1.0
    local = name[len(TRUNK_PREFIX):]
    if "pos_embed" in local:
        return 1.0
    if local.startswith("patch_embed."):
        depth = 0
    elif local.startswith("blocks."):
        depth = int(local.split(".")[1]) + 1
    else:
        depth = num_blocks + 1
    return decay ** (num_blocks + 1 - depth)


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters trained without weight decay: biases and LayerNorm weights."""
    names = {name for name, _ in model.named_parameters() if "bias" in name}
    # The official ConvNeXt block's norm is a (decayed) LayerNorm2d.
    convnext_norms = {id(m.norm) for m in model.modules() if isinstance(m, CXBlock)}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and id(module) not in convnext_norms:
            names.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW parameter groups, one per (lr, weight decay) pair; each records its
    ``initial_lr`` so the schedule can scale it."""
    num_blocks = len(model.image_encoder.trunk.blocks)
    skip_decay = no_decay_names(model)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        base = cfg.vision_lr if name.startswith(VISION_PREFIX) else cfg.base_lr
        lr = base * trunk_lr_scale(name, num_blocks, cfg.layer_decay)
        wd = 0.0 if name in skip_decay else cfg.weight_decay
        group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr,
                                             "initial_lr": lr, "weight_decay": wd})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), betas=cfg.betas, eps=cfg.eps)


class WarmupCosine:
    """lr factor at a step: linear warmup from 0, then cosine from 1 to ``final_ratio``
    at ``total_steps`` (the official fvcore cosine, where = step / total)."""

    def __init__(self, *, total_steps: int, warmup_steps: int, final_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.final_ratio = final_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(step / max(self.total_steps, 1), 1.0)
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = WarmupCosine(total_steps=total_steps, warmup_steps=cfg.warmup_steps,
                            final_ratio=cfg.final_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
