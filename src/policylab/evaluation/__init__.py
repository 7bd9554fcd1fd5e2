"""Evaluation: roll policies out in their env and measure them."""

from policylab.evaluation.metrics import (
    aggregate,
    episode_metrics,
    path_efficiency,
    path_length,
    wilson_interval,
)
from policylab.evaluation.rollout import EnvMismatchError, evaluate_policy

__all__ = [
    "EnvMismatchError",
    "aggregate",
    "episode_metrics",
    "evaluate_policy",
    "path_efficiency",
    "path_length",
    "wilson_interval",
]
