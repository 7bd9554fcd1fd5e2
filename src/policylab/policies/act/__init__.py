"""ACT: Action Chunking with Transformers."""

from policylab.policies.act.configuration_act import ACTConfig
from policylab.policies.act.modeling_act import ACTPolicy, ACTTemporalEnsembler

__all__ = ["ACTConfig", "ACTPolicy", "ACTTemporalEnsembler"]
