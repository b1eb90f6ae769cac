"""Dataset readers (DAVIS / YouTube-VOS folders, SA-V and SA-1B JSON) and synthetic videos."""

from masklet.data.layouts import VOSDataset, VOSSequence
from masklet.data.png import load_binary_mask, load_id_mask
from masklet.data.rle import decode_rle
from masklet.data.sa1b import Sa1bAnnotation, Sa1bImage, iter_sa1b_folder, load_sa1b
from masklet.data.sav import SavMasklets, load_sav, parse_sav
from masklet.data.synthetic import SyntheticVideo, SyntheticVideoConfig, generate_video

__all__ = [
    "Sa1bAnnotation",
    "Sa1bImage",
    "SavMasklets",
    "SyntheticVideo",
    "SyntheticVideoConfig",
    "VOSDataset",
    "VOSSequence",
    "decode_rle",
    "generate_video",
    "iter_sa1b_folder",
    "load_binary_mask",
    "load_id_mask",
    "load_sa1b",
    "load_sav",
    "parse_sav",
]
