"""Prompt simulation for training: which frames are prompted and how, and the clicks.

A clip is prompted either with ground-truth masks on its conditioning frames or with
clicks / boxes sampled from them; with clicks, some frames then receive correction
clicks drawn uniformly from the error region of the current prediction (a positive
click where the object was missed, a negative one where background was taken).

All randomness comes from a numpy ``Generator`` owned by the caller, so a sample's
prompts depend only on its seed, not on the device or on the other samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from masklet.train.config import PromptConfig

POSITIVE, NEGATIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 1, 0, 2, 3

Points = tuple[torch.Tensor, torch.Tensor]  # coords [O, N, 2] (x, y) pixels, labels [O, N]


@dataclass(frozen=True)
class PromptPlan:
    """The prompting decisions of one clip.

    Attributes:
        use_points: clicks / boxes (True) or ground-truth masks (False) as prompts.
        init_cond_frames: prompted frames, processed first (frame 0 leads).
        box_frames: prompted frames whose prompt is a box rather than one click.
        frames_to_correct: frames receiving correction clicks (empty with mask prompts).
    """

    use_points: bool
    init_cond_frames: tuple[int, ...]
    box_frames: frozenset[int]
    frames_to_correct: frozenset[int]

    def processing_order(self, num_frames: int) -> list[int]:
        """Prompted frames first, then the others in time order (the official order)."""
        rest = [t for t in range(num_frames) if t not in self.init_cond_frames]
        return list(self.init_cond_frames) + rest


def plan_prompts(num_frames: int, cfg: PromptConfig, rng: np.random.Generator) -> PromptPlan:
    """Draw the prompting decisions for a clip of ``num_frames`` frames.

    A single image (``num_frames == 1``) is always prompted with a click or box and
    corrected, as in the official image + video training mix.
    """
    use_points = num_frames == 1 or rng.random() < cfg.prob_point_input
    num_init = min(cfg.num_init_cond_frames, num_frames)
    if cfg.rand_init_cond_frames and num_init > 1:
        num_init = int(rng.integers(1, num_init, endpoint=True))
    num_correct = min(cfg.num_frames_to_correct, num_frames)
    if use_points and cfg.rand_frames_to_correct and num_correct > num_init:
        num_correct = int(rng.integers(num_init, num_correct, endpoint=True))
    num_correct = max(num_correct, num_init)
    others = rng.permutation(np.arange(1, num_frames)).tolist()
    init = (0, *others[: num_init - 1])
    correct: frozenset[int] = frozenset()
    if use_points:
        correct = frozenset(init) | frozenset(others[num_init - 1 : num_correct - 1])
    boxes = frozenset(t for t in init if use_points and rng.random() < cfg.prob_box_input)
    return PromptPlan(use_points, init, boxes, correct)


def sample_clicks(
    gt: torch.Tensor, pred: torch.Tensor | None, rng: np.random.Generator
) -> Points:
    """One click per object, uniform over its error region.

    A click in the false-negative region is positive, in the false-positive region
    negative. Where the prediction is already perfect, a negative click is drawn from
    the background (from the whole image, positive, if the object fills it).

    Args:
        gt: [O, 1, H, W] bool ground truth.
        pred: [O, 1, H, W] bool prediction, or None (as if nothing were predicted, so the
            click is a positive one inside the object when it is present).
    Returns:
        coords [O, 1, 2] float (x, y) pixels and labels [O, 1] int32.
    """
    num, _, _, width = gt.shape
    truth = gt.flatten(1)
    region = truth.clone() if pred is None else truth ^ pred.flatten(1)
    perfect = ~region.any(-1, keepdim=True)
    region = torch.where(perfect, ~truth, region)
    region = torch.where(~region.any(-1, keepdim=True), torch.ones_like(region), region)
    cumulative = region.to(torch.int32).cumsum(-1, dtype=torch.int32)  # [O, HW]
    counts = cumulative[:, -1].cpu().numpy()
    # k-th pixel of the region (0-based), found as the first position where the running
    # count exceeds k; one uniform draw per object keeps it device independent.
    k = np.minimum(np.floor(rng.random(num) * counts), counts - 1).astype(np.int32)
    wanted = torch.from_numpy(k + 1).to(cumulative.device).unsqueeze(1)
    index = torch.searchsorted(cumulative, wanted)  # [O, 1]
    labels = truth.gather(1, index).to(torch.int32)
    coords = torch.stack([index % width, index // width], dim=-1).float()
    return coords, labels


def mask_boxes(gt: torch.Tensor) -> torch.Tensor:
    """Tight boxes [O, 4] (x0, y0, x1, y1), inclusive pixel indices, of masks [O, 1, H, W];
    an empty mask gets the whole image."""
    _, _, height, width = gt.shape
    rows, cols = gt[:, 0].any(-1), gt[:, 0].any(-2)  # [O, H], [O, W]

    def span(present: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=gt.device).expand_as(present)
        low = torch.where(present, idx, size).amin(-1)
        high = torch.where(present, idx, -1).amax(-1)
        empty = ~present.any(-1)
        return torch.where(empty, 0, low), torch.where(empty, size - 1, high)

    x0, x1 = span(cols, width)
    y0, y1 = span(rows, height)
    return torch.stack([x0, y0, x1, y1], dim=-1).float()


def sample_boxes(
    gt: torch.Tensor, rng: np.random.Generator, *, noise: float, noise_bound: float
) -> Points:
    """Noisy box prompts from masks [O, 1, H, W]: each corner moves by up to ``noise`` of
    the box side, at most ``noise_bound`` pixels, and stays inside the image.

    Returns:
        coords [O, 2, 2] (top-left, bottom-right) and labels [O, 2] = (2, 3).
    """
    num, _, height, width = gt.shape
    box = mask_boxes(gt)
    if noise > 0:
        side = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=-1)  # [O, 2]
        reach = (side * noise).clamp(max=noise_bound).repeat(1, 2)  # dx, dy, dx, dy
        jitter = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num, 4))).to(box)
        box = box + jitter * reach
        upper = box.new_tensor([width - 1, height - 1, width - 1, height - 1])
        box = torch.minimum(box.clamp(min=0), upper)
    labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int32, device=gt.device)
    return box.view(num, 2, 2), labels.expand(num, 2).contiguous()


def initial_prompt(
    gt: torch.Tensor, use_box: bool, cfg: PromptConfig, rng: np.random.Generator
) -> Points:
    """The prompt of a prompted frame: a noisy box, or one click inside each object."""
    if use_box:
        return sample_boxes(gt, rng, noise=cfg.box_noise, noise_bound=cfg.box_noise_bound)
    return sample_clicks(gt, None, rng)


def add_points(points: Points | None, new: Points) -> Points:
    """``points`` followed by ``new`` (either may be the first prompt of a frame)."""
    if points is None:
        return new
    return torch.cat([points[0], new[0]], dim=1), torch.cat([points[1], new[1]], dim=1)
