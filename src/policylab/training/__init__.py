"""The training engine: one loop for every policy, checkpoints, resume, data-parallel runs."""

from policylab.training.configs import DatasetConfig, TrainConfig, TrainingConfig
from policylab.training.trainer import TrainingError, train

__all__ = ["DatasetConfig", "TrainConfig", "TrainingConfig", "TrainingError", "train"]
