"""`build_model`: a preset name (or config) plus an optional checkpoint -> a ready SAM2Model."""

from __future__ import annotations

import logging
import os

import torch

from masklet.checkpoint import check_fits, read_state_dict
from masklet.config import ModelConfig, get_config
from masklet.modeling.compile import compile_for_inference
from masklet.modeling.sam2 import SAM2Model

log = logging.getLogger(__name__)


def build_model(
    preset: str | ModelConfig = "sam2.1_hiera_tiny",
    checkpoint: str | os.PathLike | dict | None = None,
    *,
    device: str | torch.device | None = None,
    eval_mode: bool = True,
    compile: bool = False,
) -> SAM2Model:
    """Build a SAM 2 model and load its weights.

    Args:
        preset: a preset name such as ``"sam2.1_hiera_tiny"`` (see `masklet.config.PRESETS`)
            or a `ModelConfig`.
        checkpoint: an official ``.pt`` file, a ``.safetensors`` file, an in-memory state
            dict, or None for randomly initialised weights.
        device: where to put the model (default: CPU).
        eval_mode: put the model in eval mode (inference); False for training.
        compile: ``torch.compile`` the heavy modules for inference (see
            `masklet.modeling.compile`); needs ``eval_mode``.

    Raises:
        KeyError: unknown preset name.
        CheckpointError: unreadable checkpoint, or one that does not fit the preset (the
            message names the missing / unexpected keys and the preset it fits).
    """
    if compile and not eval_mode:
        raise ValueError("compile=True is for inference: it needs eval_mode=True")
    config = preset if isinstance(preset, ModelConfig) else get_config(preset)
    state = None
    if checkpoint is not None:
        is_file = not isinstance(checkpoint, dict)
        state = read_state_dict(checkpoint) if is_file else checkpoint
        # Checked before the model is allocated, so a wrong file fails fast and cheaply.
        check_fits(state, config, source=str(checkpoint) if is_file else "state dict")
    model = SAM2Model(config)
    if state is None:
        log.warning("no checkpoint given: %s has random weights", config.name)
    else:
        model.load_state_dict(state, strict=True)
    model.to(device or "cpu")
    if not eval_mode:
        return model.train()
    model.eval()
    return compile_for_inference(model) if compile else model
