"""Stand-in `torchvision.transforms.functional`: the `InterpolationMode` enum timm maps
to strings at import time, and placeholders for the functions."""

from enum import Enum

from torchvision._placeholder import module_getattr


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


__getattr__ = module_getattr(__name__)
