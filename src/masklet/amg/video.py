"""Automatic masks for video: discover objects every K frames and track them all.

The official code offers automatic masks for images only. Here the automatic mask
generator runs on the first frame and then every ``every`` frames; masks that no
tracked object already covers become new objects, prompted with their mask, and all
objects are tracked forwards with the video predictor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from masklet.amg.generator import AutomaticMaskGenerator
from masklet.predictor.video import VideoPredictor
from masklet.tracking.session import VideoSession


@dataclass(frozen=True)
class DiscoveryConfig:
    """How new objects are found.

    Attributes:
        every: run the generator on frames 0, every, 2*every, ...
        max_objects: stop adding objects beyond this many.
        new_object_overlap: a mask whose area is covered by tracked objects by more than
            this fraction is not new.
        min_area_fraction: ignore masks smaller than this fraction of the frame.
    """

    every: int = 30
    max_objects: int = 20
    new_object_overlap: float = 0.3
    min_area_fraction: float = 0.001


def _new_masks(records: list[dict], covered: np.ndarray, cfg: DiscoveryConfig, room: int):
    """Binary masks of records not yet covered, best predicted IoU first."""
    min_area = cfg.min_area_fraction * covered.size
    chosen: list[np.ndarray] = []
    taken = covered.copy()
    for rec in sorted(records, key=lambda r: -r["predicted_iou"]):
        mask = np.asarray(rec["segmentation"], dtype=bool)
        area = mask.sum()
        if len(chosen) >= room or area < min_area:
            continue
        if (mask & taken).sum() / area > cfg.new_object_overlap:
            continue
        chosen.append(mask)
        taken |= mask
    return chosen


def track_everything(
    video_predictor: VideoPredictor,
    generator: AutomaticMaskGenerator,
    state: VideoSession,
    config: DiscoveryConfig = DiscoveryConfig(),
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Yield ``(frame_idx, obj_ids, mask_logits [N, 1, H, W])`` for every frame, in order.

    Args:
        state: a fresh session from ``video_predictor.init_state(video)``.
    Object ids are 1, 2, ... in order of discovery. The generator must wrap the same
    model as the video predictor (its image features are computed separately).
    """
    if config.every < 1:
        raise ValueError(f"every must be >= 1, got {config.every}")
    if state.objects:
        raise ValueError("track_everything needs a session without objects")
    hw = (state.video_height, state.video_width)
    next_id = 1
    covered = np.zeros(hw, dtype=bool)  # tracked objects on the next discovery frame
    for start in range(0, state.num_frames, config.every):
        room = config.max_objects - len(state.objects)
        if room > 0:
            records = generator.generate(state.source.get(start))
            for mask in _new_masks(records, covered, config, room):
                video_predictor.add_new_mask(state, start, next_id, mask)
                next_id += 1
        end = min(start + config.every, state.num_frames - 1)  # one frame past the chunk
        if not state.objects:
            for frame_idx in range(start, min(start + config.every, state.num_frames)):
                yield frame_idx, [], torch.zeros(0, 1, *hw)
            continue
        # Tracking runs one frame into the next chunk to know what is covered there; that
        # frame is tracked again (identically) with the objects found on it.
        for frame_idx, obj_ids, logits in video_predictor.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=end - start):
            if frame_idx == start + config.every:
                covered = (logits[:, 0] > 0).any(0).cpu().numpy()
            else:
                yield frame_idx, obj_ids, logits
