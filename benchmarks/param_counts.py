"""Parameter counts of ACT and Diffusion Policy at the configurations the README names.

    python benchmarks/param_counts.py

Prints one JSON object: per configuration the total parameters and those of its parts (millions). Inputs
are PushT's: a 96x96 camera and the 2-D agent state; the CPU presets use the 16-D keypoints and the state.
"""

from __future__ import annotations

import json

from torch import nn

from policylab.policies import ACTConfig, ACTPolicy, DiffusionConfig, DiffusionPolicy

IMAGE_AND_STATE = {"observation.image": [3, 96, 96], "observation.state": [2]}
KEYPOINTS_AND_STATE = {"observation.environment_state": [16], "observation.state": [2]}
ACTION = {"action": [2]}


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


def main() -> None:
    results = {
        "act_lerobot_default": act(input_shapes=IMAGE_AND_STATE),
        "act_paper_7_decoder_layers": act(input_shapes=IMAGE_AND_STATE, n_decoder_layers=7),
        "act_pusht_cpu_preset": act(
            input_shapes=KEYPOINTS_AND_STATE, dim_model=128, n_heads=4, dim_feedforward=512, n_vae_encoder_layers=2,
            chunk_size=20, n_action_steps=20,
        ),
        "diffusion_lerobot_pusht_preset": diffusion(input_shapes=IMAGE_AND_STATE),
        "diffusion_seed_config": diffusion(input_shapes=IMAGE_AND_STATE, down_dims=[256, 512, 1024]),
        "diffusion_pusht_cpu_preset": diffusion(input_shapes=KEYPOINTS_AND_STATE, down_dims=[64, 128, 256]),
    }  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
