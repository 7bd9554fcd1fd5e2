"""Helpers shared by tests: the real CLI in a subprocess, and tiny policy configurations."""

import subprocess
import sys
from pathlib import Path

import torch

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

# A Diffusion Policy as small: a two-level UNet and 20 noise levels.
TINY_DIFFUSION_FLAGS = [
    "--policy.type=diffusion",
    "--policy.down_dims=[16,32]",
    "--policy.diffusion_step_embed_dim=16",
    "--policy.n_groups=4",
    "--policy.num_train_timesteps=20",
]


def fit(policy: torch.nn.Module, batch: dict, steps: int, lr: float, record: str = "loss") -> list[float]:
    """Train `policy` on one fixed batch with AdamW; returns `record` from each step's forward."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    recorded = []
    for _ in range(steps):
        output = policy.forward(batch)
        recorded.append(output[record].item())
        output["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    return recorded


def run_policylab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "policylab.cli", *args], capture_output=True, text=True, **kwargs
    )


def graphs_compiled(call) -> int:
    """How many graphs torch.compile captured while `call()` ran: 0 when nothing compiled ran."""
    from torch._dynamo.utils import counters

    counters.clear()
    call()
    return counters["stats"]["unique_graphs"]


LEROBOT_CHECKPOINTS = (
    Path(__file__).parent / "fixtures/lerobot_checkpoints"
)  # made by its make_checkpoints.py
LEROBOT_SEED = 11  # make_checkpoints.py seeds the global generator with it before the first select_action


def executed_actions(policy, observation: dict, steps: int) -> torch.Tensor:
    """After reset(), select_action `steps` times on the same observations (as make_checkpoints.py calls
    LeRobot's policies): (B, steps, Da)."""
    policy.reset()
    torch.manual_seed(LEROBOT_SEED)
    with torch.no_grad():
        return torch.stack([policy.select_action(dict(observation)) for _ in range(steps)], 1)
