"""Hyperparameter search on Optuna: `policylab tune`."""

from policylab.tuning.configs import TuneConfig
from policylab.tuning.study import run_tune

__all__ = ["TuneConfig", "run_tune"]
