"""AdamW with the official parameter groups, and the learning-rate schedule.

Learning rate of a parameter = schedule(step) x group lr, where the group lr is
``vision_lr`` for ``image_encoder.*`` and ``base_lr`` otherwise, times a layer-wise decay
inside the trunk (the BEiT rule of the official ``layer_decay_param_modifier``): with the
trunk cut into n layers, layer id 0 is its input embedding, ids 1..n its residual units
in forward order, n + 1 anything else, and a parameter of layer id k gets
``layer_decay ** (n + 1 - k)``.

- Hiera (official): the patch embedding is id 0, block i is id i + 1; the position
  embeddings get 1 (the recipe's ``*pos_embed*`` override).
- RepViT (EdgeTAM): no official training recipe exists (EdgeTAM's repository ships only
  the SAM 2.1 one, whose modifier needs Hiera's ``get_layer_id``), so masklet applies the
  same rule to RepViT's residual units: the stem is id 0, then every stage's downsample
  unit (a block, the strided convolutions and an MLP) and every block get the next id, in
  forward order: 23 layers for RepViT-M1 (2 + (1 + 2) + (1 + 14) + (1 + 2)), close to
  Hiera-B+'s 24 for which the recipe's 0.9 was chosen, so the stem's factor (0.9^24)
  matches B+'s patch embedding (0.9^25) within one step. timm's own RepViT grouping
  differs only in giving a downsample the id of its stage's first block.

Weight decay is 0 for biases and for the weights of ``nn.LayerNorm`` modules (not the
2-D LayerNorms of conv stacks, which the official recipe decays; masklet's ConvNeXt
block normalises channels-last with an ``nn.LayerNorm`` where the official block uses a
2-D one, so it is decayed too). The same rule decays RepViT's batch-norm scales (their
shifts are biases).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from masklet.modeling.hiera import Hiera
from masklet.modeling.memory_encoder import CXBlock
from masklet.modeling.repvit import RepViT
from masklet.train.config import OptimConfig

TRUNK_PREFIX = "image_encoder.trunk."
VISION_PREFIX = "image_encoder."


def trunk_layers(trunk: nn.Module) -> tuple[list[tuple[str, int]], int]:
    """(name prefix inside the trunk, layer id) pairs and the number of layers n."""
    if isinstance(trunk, Hiera):
        n = len(trunk.blocks)
        return [("patch_embed.", 0)] + [(f"blocks.{i}.", i + 1) for i in range(n)], n
    if isinstance(trunk, RepViT):
        units = []
        for i in range(trunk.body.num_stages):
            stage = getattr(trunk.body, f"stages_{i}")
            if not isinstance(stage.downsample, nn.Identity):
                units.append(f"body.stages_{i}.downsample.")
            units += [f"body.stages_{i}.blocks.{j}." for j in range(len(stage.blocks))]
        return [("body.stem.", 0)] + [(u, k + 1) for k, u in enumerate(units)], len(units)
    raise ValueError(f"no layer-wise lr decay is defined for a {type(trunk).__name__} trunk")


def trunk_lr_scale(name: str, layers: list[tuple[str, int]], num_layers: int,
                   decay: float) -> float:
    """Layer-decay factor of a parameter called ``name`` (full model name), given the
    trunk's `trunk_layers`."""
    if not name.startswith(TRUNK_PREFIX):
        return 1.0
    local = name[len(TRUNK_PREFIX):]
    if "pos_embed" in local:
        return 1.0
    layer = next((k for prefix, k in layers if local.startswith(prefix)), num_layers + 1)
    return decay ** (num_layers + 1 - layer)


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
    layers, num_layers = trunk_layers(model.image_encoder.trunk)
    skip_decay = no_decay_names(model)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        base = cfg.vision_lr if name.startswith(VISION_PREFIX) else cfg.base_lr
        lr = base * trunk_lr_scale(name, layers, num_layers, cfg.layer_decay)
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
