"""What ships inside the package so that masklet runs offline in the first minute.

- The nano demo model (`build_model()` with no checkpoint): a `nano` SAM 2 trained by
  masklet's own training code on synthetic videos and a few DAVIS sequences, a
  demonstration, not a substitute for the official checkpoints. The commands that rebuilt
  it are recorded in `weights/NANO.md`.
- The demo clip (`masklet demo`): 30 frames of the SAM 2 release's bedroom video at
  480x270 (Apache-2.0, licence beside it in `assets/`), made by `scripts/make_demo_clip.py`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from masklet.checkpoint import CheckpointError

BUNDLED_WEIGHTS = "nano.safetensors"
DEMO_CLIP = "bedroom.mp4"


def bundled_preset() -> str:
    """Name of the preset the bundled weights belong to."""
    from masklet.config import NANO_PRESET

    return NANO_PRESET


def bundled_checkpoint() -> Path:
    """Path of the bundled weights file, or a clear error if this install lacks it."""
    path = Path(str(resources.files("masklet") / "weights" / BUNDLED_WEIGHTS))
    if not path.is_file():
        raise CheckpointError(
            f"the bundled nano model is missing ({path}); reinstall masklet or pass "
            "an official SAM 2 checkpoint"
        )
    return path


def demo_clip() -> Path:
    """Path of the bundled demo video (30 frames, 480x270, H.264 MP4)."""
    path = Path(str(resources.files("masklet") / "assets" / DEMO_CLIP))
    if not path.is_file():
        raise FileNotFoundError(f"the bundled demo clip is missing ({path}); reinstall masklet")
    return path
