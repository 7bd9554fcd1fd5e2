"""Diffusion Policy's observation encoder: per camera crop -> ResNet (group norm) -> spatial softmax keypoints.

The global condition of the UNet is, for each of the To observation steps, [state, environment state,
image features of every camera], flattened over steps: (B, To * per_step_dim). A camera's trunk feature maps
may come precomputed as `<camera>.feature_map` (B, To, C', h, w) in place of its frames (a frozen trunk's
features cached for training).
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as T  # noqa: N812
from torch import Tensor, nn

from policylab.constants import FEATURE_MAP_SUFFIX, OBS_ENV_STATE, OBS_STATE
from policylab.policies.backbones import SpatialSoftmax, group_norm_layer, resize_images, vision_trunk
from policylab.policies.diffusion.configuration_diffusion import DiffusionConfig


class RgbEncoder(nn.Module):
    """(B, 3, H, W) images in normalized units -> (B, 2K) features."""

    def __init__(self, config: DiffusionConfig, image_key: str):
        super().__init__()
        norm_layer = group_norm_layer if config.use_group_norm else nn.BatchNorm2d
        self.backbone, channels = vision_trunk(
            config.vision_backbone,
            config.pretrained_backbone_weights,
            norm_layer=norm_layer,
            without_weights_flag="--policy.pretrained_backbone_weights=null",
        )
        self.crop_train = self.crop_eval = None
        self.resize_shape = config.resize_shape
        height, width = config.image_size(image_key)
        if config.crop_shape:
            height, width = config.crop_shape
            self.crop_eval = T.CenterCrop(config.crop_shape)
            self.crop_train = T.RandomCrop(config.crop_shape) if config.crop_is_random else self.crop_eval
        with torch.no_grad():  # the feature map's size for this input size
            _, _, h, w = self.backbone(torch.zeros(1, 3, height, width)).shape
        k = config.spatial_softmax_num_keypoints
        self.pool = SpatialSoftmax(channels, h, w, k)
        self.out = nn.Sequential(nn.Linear(2 * k, 2 * k), nn.ReLU())

    def feature_map(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> the trunk's (B, C, h, w), after the resize and the crop."""
        images = resize_images(images, self.resize_shape)
        crop = self.crop_train if self.training else self.crop_eval
        if crop is not None:
            images = crop(images)  # one random offset for the whole batch in training
        return self.backbone(images)

    def head(self, feature_map: Tensor) -> Tensor:
        """The trunk's (B, C, h, w) -> (B, 2K) features."""
        return self.out(self.pool(feature_map).flatten(1))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.feature_map(images))


class ObservationEncoder(nn.Module):
    """Normalized observations, each (B, To, ...) -> global condition (B, To * per_step_dim)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        shapes = config.input_shapes
        self.vector_keys = [k for k in (OBS_STATE, OBS_ENV_STATE) if k in shapes]
        self.image_keys = config.image_keys
        if not self.vector_keys and not self.image_keys:
            raise ValueError(
                f"Diffusion Policy needs a state, environment state or image input, got {list(shapes)}"
            )
        self.separate = config.use_separate_rgb_encoder_per_camera
        n_encoders = len(self.image_keys) if self.separate else min(1, len(self.image_keys))
        self.rgb_encoders = nn.ModuleList([RgbEncoder(config, self.image_keys[i]) for i in range(n_encoders)])
        image_dim = 2 * config.spatial_softmax_num_keypoints * len(self.image_keys)
        self.per_step_dim = sum(shapes[k][0] for k in self.vector_keys) + image_dim
        self.output_dim = self.per_step_dim * config.n_obs_steps

    def encoder_of(self, key: str) -> RgbEncoder:
        return self.rgb_encoders[self.image_keys.index(key) if self.separate else 0]

    def encode_frames(self, key: str, images: Tensor) -> Tensor:
        """Normalized frames of camera `key` (N, C, H, W) -> (N, 2K) features."""
        return self.encoder_of(key)(images)

    def condition(self, vectors: dict[str, Tensor], image_features: dict[str, Tensor]) -> Tensor:
        """Vector inputs (B, To, D) and image features (B, To, 2K) by key -> (B, To * per_step_dim)."""
        steps = [vectors[k] for k in self.vector_keys] + [image_features[k] for k in self.image_keys]
        return torch.cat(steps, dim=-1).flatten(1)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        image_features = {}
        for key in self.image_keys:
            if key + FEATURE_MAP_SUFFIX in inputs:
                maps = inputs[key + FEATURE_MAP_SUFFIX]  # (B, To, C', h, w)
                features = self.encoder_of(key).head(maps.flatten(0, 1))
            else:
                maps = inputs[key]  # (B, To, C, H, W)
                features = self.encode_frames(key, maps.flatten(0, 1))  # (B * To, 2K)
            image_features[key] = features.unflatten(0, maps.shape[:2])
        return self.condition(inputs, image_features)  # (B, To * per_step_dim)
