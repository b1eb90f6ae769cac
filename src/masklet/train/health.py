"""A training-health check: is the image embedding drowning the prompts' positions?

The mask decoder finds where a click or box lies by comparing positional encodings inside
its attention, where they are added to the image embedding. If training grows the
embedding far beyond the positional encoding (a high learning rate from random weights
did: std 2.7 against 0.7), that comparison is drowned and every prompt yields the same
mask of all objects. A freshly built model has a ratio near 1.
"""

from __future__ import annotations

import logging
import math

import torch

from masklet.modeling.sam2 import SAM2Model

log = logging.getLogger("masklet.train")

# Ratio above which the warning fires: the failure seen had 3.8, fresh models about 1.
EMBED_TO_PE_LIMIT = 2.5


class EmbedScaleMonitor:
    """Records the std of the stride-16 image embedding of every forward pass (a hook
    on the image encoder) and compares it with the prompt encoder's positional encoding."""

    def __init__(self, model: SAM2Model) -> None:
        self.model = model
        self.embed_std: torch.Tensor | None = None
        self.pe_std: float | None = None
        self.warned = False
        model.image_encoder.register_forward_hook(self._record)

    def _record(self, _module, _inputs, output) -> None:
        # Kept on the device: reading it here would stall an accelerator mid-forward.
        self.embed_std = output.backbone_fpn[-1].detach().float().std()

    def ratio(self) -> float:
        """std(image embedding) / std(positional encoding), NaN before the first pass."""
        if self.embed_std is None:
            return math.nan
        if self.pe_std is None:
            # The encoding is a fixed function of a buffer: measured once, at the first
            # step, i.e. after any checkpoint (and its buffer) has been loaded.
            with torch.no_grad():
                self.pe_std = float(self.model.sam_prompt_encoder.get_dense_pe().float().std())
        return float(self.embed_std) / self.pe_std

    def check(self, step: int, warn: bool = True) -> float:
        """The current ratio; with ``warn``, a warning (once per run) when it passes
        `EMBED_TO_PE_LIMIT`."""
        ratio = self.ratio()
        if warn and ratio > EMBED_TO_PE_LIMIT and not self.warned:
            self.warned = True
            log.warning(
                "step %d: the image embedding's std is %.1fx the positional encoding's; "
                "above %.1fx prompts stop steering the mask decoder (every prompt gives "
                "the same mask). Lower --lr/--vision-lr, or see "
                "scripts/nano_surgery.py --scale-embed.", step + 1, ratio, EMBED_TO_PE_LIMIT)
        return ratio
