"""The training engine: one loop for every policy, checkpoints, resume, data-parallel runs."""

from policylab.training.configs import TrainConfig, TrainingConfig
from policylab.training.pretrain import train
from policylab.training.trainer import TrainingError

__all__ = ["TrainConfig", "TrainingConfig", "TrainingError", "train"]
