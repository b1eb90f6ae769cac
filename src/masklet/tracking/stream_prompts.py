"""User prompts of the streaming tracker, validated and mapped into model-input space.

The conversions are the offline `VideoPredictor`'s (pixel coordinates of the source,
box corners as labels 2 / 3, mask prompts resized with antialiased bilinear and
re-binarised), so that the same prompt gives the same model input in both.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from masklet.predictor.prompts import PromptError, check_box, check_in_frame, check_points
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


def point_prompt(
    points,
    labels,
    box,
    *,
    frame_hw: tuple[int, int],
    image_size: int,
    device: torch.device,
) -> PointPrompt:
    """Clicks ([N, 2] (x, y) source pixels, labels [N]) and/or a box [4] -> model clicks.

    The box becomes the first two points (labels 2 and 3), as in the official predictor.
    """
    if points is None and box is None:
        raise PromptError("give points (with labels) or a box")
    coords = np.zeros((0, 2))
    labs = np.zeros((0,), dtype=np.int64)
    if points is not None or labels is not None:
        coords, labs = check_points(points, labels)
        coords, labs = coords.reshape(-1, 2), labs.reshape(-1)
    if box is not None:
        corners = check_box(box).reshape(-1, 2)
        if corners.shape[0] != 2:
            raise PromptError("a video prompt takes one box [4]")
        coords = np.concatenate([corners, coords])
        labs = np.concatenate([[2, 3], labs])
    check_in_frame(coords, frame_hw, False, "point")
    height, width = frame_hw
    xy = torch.as_tensor(coords, dtype=torch.float32)[None]
    # Normalise then scale (not one combined factor) to round exactly like the offline path.
    xy = xy / torch.tensor([width, height]) * image_size
    lab = torch.as_tensor(labs, dtype=torch.int32)[None]
    return PointPrompt(xy.to(device), lab.to(device))


def mask_prompt(mask, *, image_size: int, device: torch.device) -> torch.Tensor:
    """A binary mask [H, W] (bool or 0/1, any size) -> [1, 1, S, S] float 0/1 model input."""
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if m.ndim != 2 or m.numel() == 0:
        raise PromptError(f"mask must be a non-empty 2-D [H, W] array, got shape {tuple(m.shape)}")
    m = m.bool()[None, None].float().to(device)
    if tuple(m.shape[-2:]) != (image_size, image_size):
        m = F.interpolate(m, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m
