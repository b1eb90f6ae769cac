"""Video and image input: frame sources (folders, files, arrays, live streams) and preprocessing."""

from masklet.io.base import FrameIndexError, FrameSource, VideoReadError
from masklet.io.frames import ArraySource, JpegFolderSource, LiveSource, VideoInput, open_frames
from masklet.io.loader import PreprocessedFrames
from masklet.io.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_image,
    preprocess_video_frame,
)
from masklet.io.video_file import VideoFileSource

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArraySource",
    "FrameIndexError",
    "FrameSource",
    "JpegFolderSource",
    "LiveSource",
    "PreprocessedFrames",
    "VideoFileSource",
    "VideoInput",
    "VideoReadError",
    "open_frames",
    "preprocess_image",
    "preprocess_video_frame",
]
