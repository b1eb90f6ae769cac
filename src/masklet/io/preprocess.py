"""Turning an RGB frame into the model input: a square, ImageNet-normalised float tensor.

The official code has two slightly different pipelines, and each is matched exactly:

* `preprocess_video_frame` (video predictor): Pillow bicubic resize of the uint8
  image, then x / 255 (computed in float64, stored as float32), then
  (x - mean) / std in float32.
* `preprocess_image` (image predictor): x / 255 in float32, then an antialiased
  bilinear resize of the float tensor (torchvision `Resize` on tensors), then
  (x - mean) / std.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from masklet.io.base import describe_frame_problem

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_input(frame: np.ndarray, image_size: int) -> None:
    problem = describe_frame_problem(frame)
    if problem is not None:
        raise ValueError(f"frame must be an RGB image [H, W, 3] uint8: {problem}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _mean_std() -> tuple[Tensor, Tensor]:
    """ImageNet mean and std as float32 [3, 1, 1] (float32 is what both pipelines use)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return mean, std


@lru_cache(maxsize=1)
def _video_normalization_table() -> np.ndarray:
    """[3, 256] float32: the normalised value of each uint8 level, per channel.

    The video pipeline is a per-pixel function of the uint8 value, so evaluating it
    once per level with the reference's exact operations and dtypes, then looking
    pixels up, gives identical numbers at a fraction of the cost.
    """
    levels = torch.from_numpy(np.arange(256, dtype=np.uint8) / 255.0).to(torch.float32)
    mean, std = _mean_std()
    return ((levels.view(1, 256) - mean.view(3, 1)) / std.view(3, 1)).numpy()


def preprocess_video_frame(frame: np.ndarray, image_size: int) -> Tensor:
    """Model input for a video frame, as the official video predictor computes it.

    frame: [H, W, 3] uint8 RGB. Returns [3, image_size, image_size] float32 on CPU.
    """
    _check_input(frame, image_size)
    # Pillow's default filter for resize() on RGB images is bicubic; name it so a
    # Pillow release changing that default cannot change our numbers.
    resized = Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = np.asarray(resized)
    table = _video_normalization_table()
    normalized = np.empty((3, image_size, image_size), dtype=np.float32)
    for c in range(3):
        np.take(table[c], pixels[..., c], out=normalized[c])
    return torch.from_numpy(normalized)


def preprocess_image(image: np.ndarray, image_size: int) -> Tensor:
    """Model input for a still image, as the official image predictor computes it.

    image: [H, W, 3] uint8 RGB. Returns [3, image_size, image_size] float32 on CPU.
    """
    _check_input(image, image_size)
    # A fresh channels-first copy: torchvision's ToTensor layout (and a writable array).
    x = torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))
    x = x.to(torch.float32).div(255)
    # torchvision returns the tensor untouched when it already has the target size.
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x.unsqueeze(0),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).squeeze(0)
    mean, std = _mean_std()
    return (x - mean) / std
