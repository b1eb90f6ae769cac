"""Stand-in `torchvision.ops.misc`: timm imports `FrozenBatchNorm2d` for its freeze helpers,
which the oracle never calls."""

from torchvision._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
