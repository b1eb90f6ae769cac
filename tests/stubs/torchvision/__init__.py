"""A stand-in `torchvision` for the EdgeTAM oracle's subprocess only (tests/edgetam_oracle.py).

timm imports torchvision at import time, and the real one does not load beside the CPU
torch here. The oracle only builds timm's RepViT (pure torch), so these modules supply
the few names timm imports: an `InterpolationMode` enum and importable placeholders.
Never put this folder on sys.path in a process that could use the real torchvision.
"""

__version__ = "0.0.0+masklet-test-stand-in"
