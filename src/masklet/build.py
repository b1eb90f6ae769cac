"""`build_model`: a preset name (or config) plus a checkpoint -> a ready SAM2Model.

With no arguments it gives the bundled nano demo model; an untrained model is only built
when asked for (``random_weights=True``), because silently random weights look like a
working model that segments nothing.
"""

from __future__ import annotations

import os

import torch

from masklet.checkpoint import StateDict, check_fits, closest_preset, read_state_dict
from masklet.config import ModelConfig, get_config
from masklet.modeling.compile import compile_for_inference
from masklet.modeling.sam2 import SAM2Model

Checkpoint = str | os.PathLike | dict


class MissingWeightsError(ValueError):
    """A model was asked for with neither a checkpoint nor ``random_weights=True``."""


def build_model(
    preset: str | ModelConfig | None = None,
    checkpoint: Checkpoint | None = None,
    *,
    random_weights: bool = False,
    device: str | torch.device | None = None,
    eval_mode: bool = True,
    compile: bool = False,
) -> SAM2Model:
    """Build a SAM 2 model and load its weights.

    ``build_model()`` and ``build_model("masklet_nano")`` give the bundled nano demo model
    (trained by masklet, small; see `masklet.bundled`). Any other preset needs a checkpoint,
    or ``random_weights=True`` for an untrained model (tests, training from scratch).

    Args:
        preset: a preset name such as ``"sam2.1_hiera_tiny"`` or an alias such as ``"tiny"``
            (see `masklet.config.PRESETS` / `ALIASES`), or a `ModelConfig`. None: the
            checkpoint's own preset (inferred from its names and shapes), or the bundled
            nano model when there is no checkpoint either.
        checkpoint: an official ``.pt`` file, a ``.safetensors`` file or an in-memory state
            dict.
        random_weights: build ``preset`` with randomly initialised weights (no checkpoint).
        device: where to put the model (default: CPU).
        eval_mode: put the model in eval mode (inference); False for training.
        compile: ``torch.compile`` the heavy modules for inference (see
            `masklet.modeling.compile`); needs ``eval_mode``.

    Raises:
        KeyError: unknown preset name.
        MissingWeightsError: a preset other than the bundled one with no checkpoint and no
            ``random_weights=True``.
        CheckpointError: unreadable checkpoint, one that fits no preset (when ``preset`` is
            None), or one that does not fit ``preset`` (the message names the missing /
            unexpected keys and the preset it fits).
        ValueError: contradictory arguments.
    """
    if compile and not eval_mode:
        raise ValueError("compile=True is for inference: it needs eval_mode=True")
    config, state = resolve_weights(preset, checkpoint, random_weights)
    model = SAM2Model(config)
    if state is not None:
        model.load_state_dict(state, strict=True)
    model.to(device or "cpu")
    if not eval_mode:
        return model.train()
    model.eval()
    return compile_for_inference(model) if compile else model


def resolve_weights(
    preset: str | ModelConfig | None,
    checkpoint: Checkpoint | None,
    random_weights: bool = False,
) -> tuple[ModelConfig, StateDict | None]:
    """The config and the checked state dict `build_model` would use (None: random).

    Everything is read and checked before a model is allocated, so a wrong file fails fast.
    """
    if random_weights:
        if checkpoint is not None:
            raise ValueError("give either a checkpoint or random_weights=True, not both")
        if preset is None:
            raise ValueError("random_weights=True needs a preset, e.g. "
                             "build_model('sam2.1_hiera_tiny', random_weights=True)")
        return _as_config(preset), None
    if checkpoint is None:
        if preset is not None and not uses_bundled_weights(preset):
            raise MissingWeightsError(_missing_message(_as_config(preset).name))
        from masklet.bundled import bundled_checkpoint, bundled_preset

        preset, checkpoint = bundled_preset(), bundled_checkpoint()
    in_memory = isinstance(checkpoint, dict)
    source = "state dict" if in_memory else str(checkpoint)
    state = checkpoint if in_memory else read_state_dict(checkpoint)
    if preset is None:
        preset = infer_preset(state, source)
    config = _as_config(preset)
    check_fits(state, config, source=source)
    return config, state


def uses_bundled_weights(preset: str | ModelConfig | None) -> bool:
    """Whether `build_model(preset)` with no checkpoint loads the bundled demo weights."""
    from masklet.bundled import bundled_preset

    bundled = get_config(bundled_preset())
    if preset is None:
        return True
    if isinstance(preset, ModelConfig):
        return preset == bundled  # the same architecture and sizes: the weights fit it
    return get_config(preset).name == bundled.name


def infer_preset(state: StateDict, source: str = "checkpoint") -> str:
    """The preset whose parameter names and shapes ``state`` matches exactly.

    Raises:
        CheckpointError: no preset fits exactly (the message names the closest one).
    """
    from masklet.checkpoint import CheckpointError

    if not state:
        raise CheckpointError(f"{source} holds no tensors")
    best, exact = closest_preset(state)
    if not exact:
        raise CheckpointError(f"{source} fits no known preset exactly (closest: {best}); "
                              "name the preset it was made for")
    return best


def _as_config(preset: str | ModelConfig) -> ModelConfig:
    return preset if isinstance(preset, ModelConfig) else get_config(preset)


def _missing_message(name: str) -> str:
    return (f"no weights for {name!r}: pass checkpoint=PATH (an official SAM 2 .pt or a "
            ".safetensors file; none are downloaded), or random_weights=True for an untrained "
            "model; build_model() with no preset gives the bundled demo model")
