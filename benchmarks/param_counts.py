"""Parameter counts of ACT and Diffusion Policy: LeRobot's and the papers' configurations, and every shipped preset.

    python benchmarks/param_counts.py

Prints one JSON object: per configuration the total parameters and those of its parts (millions). The
published configurations take PushT's 96x96 camera and 2-D agent state; each preset in configs/train/ is read
from its file, with its own inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from policylab.policies import ACTConfig, ACTPolicy, DiffusionConfig, DiffusionPolicy

IMAGE_AND_STATE = {"observation.image": [3, 96, 96], "observation.state": [2]}
ACTION = {"action": [2]}
PRESETS = Path(__file__).parents[1] / "configs/train"


def millions(module: nn.Module | None) -> float:
    return 0.0 if module is None else round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


def act(**fields) -> dict:
    model = ACTPolicy(ACTConfig(output_shapes=ACTION, **fields)).model
    return {
        "total_M": millions(model),
        "backbone_M": millions(getattr(model, "backbone", None)),
        "cvae_encoder_M": millions(getattr(model, "vae_encoder", None)),
    }


def diffusion(**fields) -> dict:
    policy = DiffusionPolicy(DiffusionConfig(output_shapes=ACTION, **fields))
    return {
        "total_M": millions(policy),
        "observation_encoder_M": millions(policy.observation_encoder),
        "unet_M": millions(policy.unet),
    }


def preset(path: Path) -> dict:
    """The counts of the policy a configs/train/ preset trains (its "policy" section, as `--config_path` gives it)."""
    fields = dict(json.loads(path.read_text())["policy"])
    kind = fields.pop("type")
    return act(**fields) if kind == "act" else diffusion(**fields)


def main() -> None:
    results = {
        "act_lerobot_default": act(input_shapes=IMAGE_AND_STATE),
        "act_paper_7_decoder_layers": act(input_shapes=IMAGE_AND_STATE, n_decoder_layers=7),
        "diffusion_lerobot_pusht_preset": diffusion(input_shapes=IMAGE_AND_STATE),
        "diffusion_seed_config": diffusion(input_shapes=IMAGE_AND_STATE, down_dims=[256, 512, 1024]),
    }
    results.update({f"preset {path.stem}": preset(path) for path in sorted(PRESETS.glob("*.json"))})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
