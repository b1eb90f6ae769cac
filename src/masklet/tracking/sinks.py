"""Consumers of the streaming tracker's per-frame masks (called, then forgotten, by the tracker)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from masklet.export import write_palette_png


class MaskSink(Protocol):
    """Anything called with each frame's result; a plain function fits.

    Args:
        frame_idx: index of the frame in the source.
        obj_ids: the objects, in the order of ``masks``' first dimension.
        masks: [num_objects, 1, H, W] mask logits at the source's resolution.
    """

    def __call__(self, frame_idx: int, obj_ids: list[int], masks: torch.Tensor) -> None: ...


class PngMaskSink:
    """Writes ``<out_dir>/<frame_idx:05d>.png``: DAVIS-palette label maps (index = object id).

    Each file is written atomically (a reader never sees a partial PNG); a frame emitted
    again after a correction replaces its file. Object ids must be in 1..255; where
    objects overlap, the smaller id wins (`masklet.export.label_map_from_masks`).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.frames_written = 0

    def path_for(self, frame_idx: int) -> Path:
        return self.out_dir / f"{frame_idx:05d}.png"

    def __call__(self, frame_idx: int, obj_ids: list[int], masks: torch.Tensor) -> None:
        if obj_ids:
            # Thresholded on the masks' device, so only booleans cross to the CPU.
            fg = (masks[:, 0] > 0).cpu().numpy()
            frame = {obj_id: fg[i] for i, obj_id in enumerate(obj_ids)}
        else:
            frame = np.zeros(tuple(masks.shape[-2:]), dtype=np.uint8)
        write_palette_png(self.path_for(frame_idx), frame)
        self.frames_written += 1
