"""Diffusion Policy: a conditional 1-D UNet denoising action sequences, with DDPM or DDIM sampling."""

from policylab.policies.diffusion.configuration_diffusion import DiffusionConfig
from policylab.policies.diffusion.modeling_diffusion import DiffusionPolicy

__all__ = ["DiffusionConfig", "DiffusionPolicy"]
