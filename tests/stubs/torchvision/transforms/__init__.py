"""Stand-in `torchvision.transforms`: placeholder transform classes (see the package doc)."""

from torchvision._placeholder import module_getattr
from torchvision.transforms.functional import InterpolationMode  # noqa: F401

__getattr__ = module_getattr(__name__)
