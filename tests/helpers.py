"""Helpers shared by tests: the real CLI in a subprocess, and tiny policy configurations."""

import subprocess
import sys

KEYPOINT_INPUTS = "--policy.input_shapes={observation.state: [2], observation.environment_state: [16]}"

# An ACT small enough to train a few steps in well under a second on CPU.
TINY_ACT_FLAGS = [
    "--policy.type=act",
    "--policy.dim_model=32",
    "--policy.n_heads=2",
    "--policy.dim_feedforward=64",
    "--policy.n_encoder_layers=1",
    "--policy.n_vae_encoder_layers=1",
    "--policy.latent_dim=4",
    "--policy.chunk_size=5",
    "--policy.n_action_steps=5",
    "--policy.pretrained_backbone=false",
]


def run_policylab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "policylab.cli", *args], capture_output=True, text=True, **kwargs
    )
