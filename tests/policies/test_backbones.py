"""Camera encoders: the feature map each backbone returns, what each policy builds on it, what each refuses."""

import pytest
import torch

from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.policies.backbones import BACKBONES, SMALL_CNN, vision_trunk
from policylab.policies.diffusion import DiffusionConfig, DiffusionPolicy

IMAGE_STATE = {"observation.image": [3, 96, 96], "observation.state": [2]}
STRIDE = {"resnet18": 32, "resnet34": 32, "resnet50": 32, SMALL_CNN: 8}
CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, SMALL_CNN: 128}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize(("height", "width"), [(96, 96), (64, 80)])
def test_each_backbone_returns_its_channels_at_its_stride(name, height, width):
    trunk, channels = vision_trunk(name, weights=None)
    features = trunk(torch.rand(2, 3, height, width))
    stride = STRIDE[name]
    assert channels == CHANNELS[name]
    assert features.shape == (2, channels, -(-height // stride), -(-width // stride))


def test_the_small_cnn_costs_a_tenth_of_resnet18():
    small, _ = vision_trunk(SMALL_CNN, weights=None)
    resnet, _ = vision_trunk("resnet18", weights=None)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(small) * 20 < count(resnet)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_act_from_images_acts_with_each_backbone(backbone):
    config = ACTConfig(input_shapes=IMAGE_STATE, output_shapes={"action": [2]}, vision_backbone=backbone,
                       dim_model=16, n_heads=2, dim_feedforward=16, n_encoder_layers=1, n_vae_encoder_layers=1,
                       chunk_size=4, n_action_steps=4)  # fmt: skip
    policy = ACTPolicy(config, dataset_stats=stats(config))
    tokens, _ = policy.model.image_tokens(torch.rand(1, 1, 3, 96, 96))
    assert tokens.shape == (1, (96 // STRIDE[backbone]) ** 2, 16)  # (B, h*w, D)
    assert policy.select_action({k: torch.rand(1, *s) for k, s in IMAGE_STATE.items()}).shape == (1, 2)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_diffusion_from_images_samples_with_each_backbone(backbone):
    config = DiffusionConfig(input_shapes=IMAGE_STATE, output_shapes={"action": [2]}, vision_backbone=backbone,
                             down_dims=[16, 32], diffusion_step_embed_dim=16, n_groups=4, crop_shape=[84, 84],
                             spatial_softmax_num_keypoints=4, num_train_timesteps=10)  # fmt: skip
    policy = DiffusionPolicy(config, dataset_stats=stats(config))
    encoder = policy.observation_encoder.rgb_encoders[0]
    assert encoder(torch.rand(3, 3, 96, 96)).shape == (3, 8)  # (B, 2K)
    assert policy.select_action({k: torch.rand(1, *s) for k, s in IMAGE_STATE.items()}).shape == (1, 2)


def test_the_small_cnn_refuses_pretrained_weights_naming_the_field():
    with pytest.raises(ValueError, match="pretrained_backbone=true"):
        ACTConfig(input_shapes=IMAGE_STATE, output_shapes={"action": [2]}, vision_backbone=SMALL_CNN,
                  pretrained_backbone=True)  # fmt: skip
    with pytest.raises(ValueError, match="pretrained_backbone_weights=null"):
        DiffusionConfig(input_shapes=IMAGE_STATE, output_shapes={"action": [2]}, vision_backbone=SMALL_CNN,
                        pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1", use_group_norm=False)  # fmt: skip


def stats(config) -> dict:
    shapes = {**config.input_shapes, **config.output_shapes}
    return {
        key: {
            "mean": torch.zeros(size),
            "std": torch.ones(size),
            "min": torch.zeros(size),
            "max": torch.ones(size),
        }
        for key, shape in shapes.items()
        for size in [(shape[0], 1, 1) if len(shape) == 3 else tuple(shape)]
    }
