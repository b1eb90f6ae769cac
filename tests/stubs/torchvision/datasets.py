"""Stand-in `torchvision.datasets`: placeholder dataset classes (see the package doc)."""

from torchvision._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
