"""Optional ``torch.compile`` of a model for inference: the one place where it is applied.

The four modules that do the work of a tracked frame are compiled in place: the image
encoder (once per frame), memory attention, the memory encoder and the mask decoder.
The prompt encoder and the bookkeeping around them stay eager (they are cheap and their
inputs change shape with every click). The first calls pay for compilation (minutes on
a CPU: about 3 for the nano model at 128 px with a cold cache); later frames reuse the
compiled code, and the memory bank's growing length is handled by dynamic shapes after
one recompilation.

Compiled models are for inference only: the parameters are frozen (``requires_grad``
False), because a graph compiled with trainable parameters records autograd state that
inference-mode tensors cannot enter.
"""

from __future__ import annotations

from masklet.modeling.sam2 import SAM2Model

COMPILED_MODULES = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder")


def compile_for_inference(model: SAM2Model, *, mode: str | None = None) -> SAM2Model:
    """Freeze ``model`` and compile its heavy modules in place; returns the same model.

    Args:
        mode: a ``torch.compile`` mode ("default", "reduce-overhead", "max-autotune");
            None for the default.
    Raises:
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError("compile_for_inference needs a model in eval mode (model.eval())")
    model.requires_grad_(False)
    for name in COMPILED_MODULES:
        getattr(model, name).compile(mode=mode)
    return model


def is_compiled(model: SAM2Model) -> bool:
    """Whether `compile_for_inference` was applied to ``model``."""
    # nn.Module.compile() keeps the compiled callable there (None before).
    return all(getattr(getattr(model, name), "_compiled_call_impl", None) is not None
               for name in COMPILED_MODULES)
