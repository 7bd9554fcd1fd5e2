"""Evaluation: roll policies out in their env and measure them."""

from policylab.evaluation.metrics import path_efficiency, path_length, wilson_interval
from policylab.evaluation.rollout import evaluate_policy

__all__ = ["evaluate_policy", "path_efficiency", "path_length", "wilson_interval"]
