"""masklet: SAM 2 (Segment Anything in Images and Videos), written from scratch in PyTorch.

    from masklet import build_model, ImagePredictor
    model = build_model("sam2.1_hiera_tiny", checkpoint="sam2.1_hiera_tiny.pt")
    predictor = ImagePredictor(model)
"""

from masklet.build import MissingWeightsError, build_model
from masklet.checkpoint import CheckpointError
from masklet.config import PRESETS, ModelConfig, get_config
from masklet.predictor.image import ImagePredictor
from masklet.predictor.video import VideoPredictor
from masklet.tracking.motion import MotionConfig
from masklet.tracking.streaming import StreamingTracker

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ImagePredictor",
    "MissingWeightsError",
    "ModelConfig",
    "MotionConfig",
    "StreamingTracker",
    "VideoPredictor",
    "build_model",
    "get_config",
]
