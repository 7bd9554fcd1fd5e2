"""`policylab study`: ACT and Diffusion Policy on consistent and diverse demonstrations, every claim measured."""

from policylab.study.configs import StudyConfig
from policylab.study.run import run_study

__all__ = ["StudyConfig", "run_study"]
