"""Scripted experts that record demonstrations."""

from policylab.experts.pusht import PushTExpert, PushTExpertConfig

__all__ = ["PushTExpert", "PushTExpertConfig"]
