"""The small demo model shipped inside the package (used when no checkpoint is given).

It is a `nano` SAM 2 trained by masklet's own training code on synthetic videos and a
few DAVIS sequences: a demonstration that runs offline, not a substitute for the
official checkpoints. The command that rebuilt it is recorded in `weights/NANO.md`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from masklet.checkpoint import CheckpointError

BUNDLED_WEIGHTS = "nano.safetensors"


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
            "--checkpoint with an official SAM 2 checkpoint"
        )
    return path
