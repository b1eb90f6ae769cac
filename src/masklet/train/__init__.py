"""Training and fine-tuning following the SAM 2 recipe.

    from masklet.train import TrainConfig, DataSource, run_training
    run_training(TrainConfig(model="masklet_nano", sources=(DataSource("synthetic"),)))

Importing this package registers the ``masklet_nano`` preset.
"""

from masklet.train.config import (
    AugmentConfig,
    DataSource,
    LossConfig,
    OptimConfig,
    PromptConfig,
    TrainConfig,
)
from masklet.train.nano import NANO_CONFIG, NANO_NAME
from masklet.train.trainer import StepLog, Trainer, TrainResult, run_training

__all__ = [
    "NANO_CONFIG",
    "NANO_NAME",
    "AugmentConfig",
    "DataSource",
    "LossConfig",
    "OptimConfig",
    "PromptConfig",
    "StepLog",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "run_training",
]
