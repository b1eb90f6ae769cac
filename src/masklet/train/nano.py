"""The ``masklet_nano`` preset used for CPU training (defined with the presets in config)."""

from masklet.config import NANO_PRESET, PRESETS

NANO_NAME = NANO_PRESET
NANO_CONFIG = PRESETS[NANO_PRESET]
