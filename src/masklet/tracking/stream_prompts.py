"""User prompts of the streaming tracker, validated and mapped into model-input space.

The conversions are the offline `VideoPredictor`'s (pixel coordinates of the source,
box corners as labels 2 / 3, mask prompts resized with antialiased bilinear and
re-binarised), so that the same prompt gives the same model input in both.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from masklet.tracking.state import PointPrompt


@dataclass
class QueuedPrompt:
    """A prompt given before its frame was processed, replayed when the frame is.

    Exactly one of ``points`` / ``mask`` is set; ``clear_old_points`` as in `add_points`.
    """

    obj_id: int
    points: PointPrompt | None
    mask: torch.Tensor | None
    clear_old_points: bool = True


def check_obj_id(obj_id) -> int:
    """An object id as a plain int (bools and floats are refused, not silently cast)."""
    if isinstance(obj_id, bool):
        raise TypeError("obj_id must be an int, got bool")
    try:
        return operator.index(obj_id)
    except TypeError:
        raise TypeError(f"obj_id must be an int, got {type(obj_id).__name__}") from None
