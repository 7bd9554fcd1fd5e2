"""The training engine: one loop for every policy, checkpoints, resume, data-parallel runs."""

from policylab.training.configs import TrainConfig, TrainingConfig
from policylab.training.trainer import TrainingError, train

__all__ = ["TrainConfig", "TrainingConfig", "TrainingError", "train"]
