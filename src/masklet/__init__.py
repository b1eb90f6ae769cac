"""masklet: SAM 2 (Segment Anything in Images and Videos), written from scratch in PyTorch."""

__version__ = "0.1.0"
