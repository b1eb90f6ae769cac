"""Clip augmentation for training (the official video transforms, on tensors).

Order: horizontal flip, square resize to the model's input size, a random affine
(rotation, x-shear, zoom, shift; skipped when it would push an object out of the first
frame), colour jitter for the whole clip, random grayscale, colour jitter per frame,
ImageNet normalisation. Geometric changes are the same on every frame of a clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from masklet.io.preprocess import IMAGENET_MEAN, IMAGENET_STD
from masklet.train.config import AugmentConfig

# Area the affine reveals outside the image gets the mean colour (as the official fill).
_FILL = (123 / 255, 116 / 255, 103 / 255)


@dataclass
class TrainSample:
    """A clip ready for the model.

    Attributes:
        images: [T, 3, S, S] float32, normalised.
        masks: [T, O, S, S] bool, one channel per object.
        name: where it came from (for logs).
    """

    images: torch.Tensor
    masks: torch.Tensor
    name: str = ""

    @property
    def num_objects(self) -> int:
        return self.masks.shape[1]


def _resize(images: torch.Tensor, masks: torch.Tensor, size: int):
    if images.shape[-2:] == (size, size):
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True)
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True) > 0.5
    return images, masks.float()


def _affine_theta(cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor | None:
    """[1, 2, 3] map from output to input normalised coordinates, or None for identity."""
    if not (cfg.degrees or cfg.shear or cfg.translate or cfg.scale != (1.0, 1.0)):
        return None
    angle = math.radians(rng.uniform(-cfg.degrees, cfg.degrees))
    shear = math.radians(rng.uniform(-cfg.shear, cfg.shear))
    zoom = rng.uniform(*cfg.scale)
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * 2  # normalised units
    cos, sin = math.cos(angle), math.sin(angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    forward = zoom * rotate @ np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    theta = np.concatenate([inverse, -(inverse @ shift)[:, None]], axis=1)
    return torch.tensor(theta, dtype=torch.float32).unsqueeze(0)


def _random_affine(images, masks, cfg: AugmentConfig, rng: np.random.Generator):
    theta = _affine_theta(cfg, rng)
    if theta is None:
        return images, masks
    grid = F.affine_grid(theta.expand(images.shape[0], -1, -1), list(images.shape),
                         align_corners=False)
    new_masks = F.grid_sample(masks, grid, mode="nearest", align_corners=False)
    if not new_masks[0].flatten(1).any(-1).all():
        return images, masks  # an object would leave the first frame: keep the clip as is
    fill = images.new_tensor(_FILL).view(1, 3, 1, 1)
    # Sampling the offset from the fill colour makes out-of-image pixels the fill colour.
    new_images = F.grid_sample(images - fill, grid, mode="bilinear", align_corners=False) + fill
    return new_images, new_masks


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] -> [..., 1, H, W] luma (ITU-R 601, as PIL / torchvision)."""
    return (0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :])


def _factor(strength: float, rng: np.random.Generator) -> float:
    return float(rng.uniform(max(0.0, 1 - strength), 1 + strength)) if strength > 0 else 1.0


def _color_jitter(x: torch.Tensor, strengths: tuple[float, float, float],
                  rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation changes in random order, one draw for all of
    x: [..., 3, H, W] (contrast uses each image's own mean)."""
    brightness, contrast, saturation = (_factor(s, rng) for s in strengths)
    for op in rng.permutation(3):
        if op == 0:
            x = x * brightness
        elif op == 1:
            mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
            x = contrast * x + (1 - contrast) * mean
        else:
            x = saturation * x + (1 - saturation) * _gray(x)
        x = x.clamp(0.0, 1.0)
    return x


def _colors(images: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    clip_strengths = (cfg.brightness, cfg.contrast, cfg.saturation)
    images = _color_jitter(images, clip_strengths, rng)  # one draw, each frame its own mean
    if rng.random() < cfg.grayscale_prob:
        images = _gray(images).expand(-1, 3, -1, -1)
    frame_strengths = (cfg.frame_brightness, cfg.frame_contrast, cfg.frame_saturation)
    return torch.stack([_color_jitter(frame, frame_strengths, rng) for frame in images])


def augment_clip(
    frames: np.ndarray,
    masks: np.ndarray,
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    name: str = "",
) -> TrainSample:
    """Augment a clip and bring it to the model's input size.

    Args:
        frames: [T, H, W, 3] uint8.
        masks: [T, O, H, W] bool.
        size: model input side S.
    """
    images = torch.from_numpy(np.asarray(frames, dtype=np.float32) / 255).permute(0, 3, 1, 2)
    obj = torch.from_numpy(np.asarray(masks, dtype=np.float32))
    if rng.random() < cfg.hflip_prob:
        images, obj = images.flip(-1), obj.flip(-1)
    images, obj = _resize(images, obj, size)
    images, obj = _random_affine(images, obj, cfg, rng)
    images = _colors(images, cfg, rng)
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return TrainSample((images - mean) / std, obj > 0.5, name)
