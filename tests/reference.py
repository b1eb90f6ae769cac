"""Test harness around the official `sam2` package (the reference oracle).

The reference's image predictor and mask generator import torchvision, which does
not load here; `install_torchvision_stand_in` provides the three transforms and the
two box ops they use, written plainly in torch, so the reference runs end to end.
Nothing in masklet imports this module.
"""

from __future__ import annotations

import sys
import types
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from conftest import require_reference

OFFICIAL_CONFIG_FILES = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}


class _ToTensor:
    """HxWx3 uint8 (numpy or PIL) -> [3, H, W] float in [0, 1], like torchvision's."""

    def __call__(self, pic):
        import numpy as np

        arr = np.array(pic, dtype=np.uint8, copy=True)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)


class _Resize(nn.Module):
    """torchvision Resize on tensors: bilinear, antialiased, align_corners=False."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                          antialias=True)
        return y[0]


class _Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _plain_batched_nms(boxes, scores, idxs, iou_threshold):
    """Greedy NMS per category, written independently of masklet's (for the oracle only)."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            if idxs[i] != idxs[j]:
                continue
            lt = torch.maximum(boxes[i, :2], boxes[j, :2])
            rb = torch.minimum(boxes[i, 2:], boxes[j, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            union = _box_area(boxes[i : i + 1])[0] + _box_area(boxes[j : j + 1])[0] - inter
            if inter / union > iou_threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


def install_torchvision_stand_in() -> None:
    """Register a minimal `torchvision` in sys.modules for the reference package only."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "_masklet_stand_in"):
        return
    tv = types.ModuleType("torchvision")
    tv._masklet_stand_in = True
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor, transforms.Resize, transforms.Normalize = _ToTensor, _Resize, _Normalize
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms, boxes.box_area = _plain_batched_nms, _box_area
    ops.boxes = boxes
    tv.transforms, tv.ops = transforms, ops
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.ops": ops, "torchvision.ops.boxes": boxes})


def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Perturb every parameter so zero/one initialisations cannot hide a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def build_reference(preset: str, *, video: bool = False, seed: int = 0, overrides=()):
    """The official model (or video predictor) for a preset, with random weights, in eval."""
    require_reference()
    install_torchvision_stand_in()
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    torch.manual_seed(seed)
    builder = build_sam2_video_predictor if video else build_sam2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = builder(OFFICIAL_CONFIG_FILES[preset], None, device="cpu",
                        hydra_overrides_extra=list(overrides))
    randomize_(model, seed)
    return model.eval()


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max(1, max |ref|): the project's parity measure."""
    ours = torch.as_tensor(ours).double()
    ref = torch.as_tensor(ref).double()
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    if ref.numel() == 0:
        return 0.0
    return float((ours - ref).abs().max() / max(1.0, float(ref.abs().max())))
