"""masklet-runtime: track objects with masklet's exported ONNX graphs, without PyTorch.

Importing this package (and everything under it) must never import torch: it runs where
only numpy, Pillow, PyAV and ONNX Runtime are installed.
"""

__version__ = "0.1.0"

# The streaming tracker (RUNTIME-TRACKER's names).
from masklet_runtime.sources import VideoReadError  # noqa: E402, F401
from masklet_runtime.tracker import (  # noqa: E402, F401
    FrameSignals,
    OnnxStreamingSession,
    OnnxStreamingTracker,
    TrackedFrame,
    UnknownObjectError,
)
from masklet_runtime.video import OnnxVideo, OnnxVideoPredictor  # noqa: E402, F401
