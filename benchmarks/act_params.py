"""Parameter counts of ACT configurations: LeRobot's default, the paper's 7-layer decoder, the CPU preset.

    python benchmarks/act_params.py

Prints one JSON object: per configuration the total, vision-backbone and CVAE-encoder parameter counts
(millions). Inputs are PushT's: a 96x96 camera and the 2-D agent state (the CPU preset: 16-D keypoints and
the state, no camera).
"""

from __future__ import annotations

import json

from policylab.policies.act import ACTConfig, ACTPolicy

IMAGE_AND_STATE = {"observation.image": [3, 96, 96], "observation.state": [2]}
KEYPOINTS_AND_STATE = {"observation.environment_state": [16], "observation.state": [2]}


def act(**fields) -> ACTConfig:
    # pretrained_backbone=False: the same shapes as with ImageNet weights, and nothing to download
    return ACTConfig(output_shapes={"action": [2]}, pretrained_backbone=False, **fields)


CONFIGS = {
    "lerobot_default": act(input_shapes=IMAGE_AND_STATE),
    "paper_7_decoder_layers": act(input_shapes=IMAGE_AND_STATE, n_decoder_layers=7),
    "pusht_cpu_preset": act(
        input_shapes=KEYPOINTS_AND_STATE, dim_model=128, n_heads=4, dim_feedforward=512, n_vae_encoder_layers=2,
        chunk_size=20, n_action_steps=20,
    ),
}  # fmt: skip


def millions(parameters) -> float:
    return round(sum(p.numel() for p in parameters) / 1e6, 2)


def main() -> None:
    results = {}
    for name, config in CONFIGS.items():
        model = ACTPolicy(config).model
        results[name] = {
            "total_M": millions(model.parameters()),
            "backbone_M": millions(model.backbone.parameters()) if hasattr(model, "backbone") else 0.0,
            "cvae_encoder_M": millions(model.vae_encoder.parameters())
            if hasattr(model, "vae_encoder")
            else 0.0,
            "n_decoder_layers": config.n_decoder_layers,
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
