"""Policies: one folder per policy (config + model), and what they share (normalization, checkpoints,
vision backbones). Importing this package registers every policy type."""

from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.policies.diffusion import DiffusionConfig, DiffusionPolicy
from policylab.policies.pretrained import (
    CheckpointError,
    ObservationError,
    PreTrainedConfig,
    PreTrainedPolicy,
    TrainingPreset,
)

__all__ = [
    "ACTConfig",
    "ACTPolicy",
    "CheckpointError",
    "DiffusionConfig",
    "DiffusionPolicy",
    "ObservationError",
    "PreTrainedConfig",
    "PreTrainedPolicy",
    "TrainingPreset",
]
