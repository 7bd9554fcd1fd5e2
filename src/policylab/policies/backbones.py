"""Vision backbones: a torchvision ResNet trunk (no pooling, no classifier), or a small convolutional trunk for
small frames on a CPU; each returns its last feature map.

ImageNet weights come through torchvision's own mechanism, which reads them from the torch hub cache
(`torch.hub.get_dir()/checkpoints/`) or downloads them there. Offline without the file, loading fails with
a message that names the file and where it goes; it never falls back to random weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from policylab.errors import PolicylabError

RESNETS = ("resnet18", "resnet34", "resnet50")
SMALL_CNN = "small_cnn"
BACKBONES = (*RESNETS, SMALL_CNN)
SMALL_CNN_CHANNELS = (32, 64, 128, 128)  # one 3x3 convolution each; the first three stride 2


class BackboneWeightsError(PolicylabError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


def resnet_trunk(
    name: str,
    weights: str | None,
    norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
    replace_final_stride_with_dilation: bool = False,
    without_weights_flag: str = "--policy.pretrained_backbone=false",
) -> tuple[nn.Sequential, int]:
    """A ResNet without avgpool and fc: (B, 3, H, W) -> (B, C_out, H/32, W/32). Returns it and C_out.

    weights: None (random initialization) or a torchvision weights name for this ResNet, e.g.
        "IMAGENET1K_V1" or "ResNet18_Weights.IMAGENET1K_V1".
    without_weights_flag: the flag that trains from scratch instead, named when the weights are unavailable.
    """
    if name not in RESNETS:
        raise ValueError(f"vision_backbone '{name}' is not one of {', '.join(RESNETS)}")
    weights = _pretrained_weights(name, weights, without_weights_flag) if weights is not None else None
    model = getattr(torchvision.models, name)(
        weights=weights,
        norm_layer=norm_layer,
        replace_stride_with_dilation=[False, False, replace_final_stride_with_dilation],
    )
    trunk = nn.Sequential(*list(model.children())[:-2])
    return trunk, model.fc.in_features


def vision_trunk(
    name: str,
    weights: str | None,
    norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
    replace_final_stride_with_dilation: bool = False,
    without_weights_flag: str = "--policy.pretrained_backbone=false",
) -> tuple[nn.Sequential, int]:
    """The trunk called `name` (one of BACKBONES) and its output channels; see resnet_trunk and small_cnn_trunk."""
    if name != SMALL_CNN:
        return resnet_trunk(
            name, weights, norm_layer, replace_final_stride_with_dilation, without_weights_flag
        )
    if weights is not None:
        raise ValueError(
            f"{SMALL_CNN} has no pretrained weights; train it from scratch with {without_weights_flag}"
        )
    if replace_final_stride_with_dilation:
        raise ValueError(
            f"replace_final_stride_with_dilation is for ResNets; {SMALL_CNN} has no final stride"
        )
    return small_cnn_trunk()


def small_cnn_trunk() -> tuple[nn.Sequential, int]:
    """3x3 convolutions with group norm and ReLU, made for 64-96 px frames:
    (B, 3, H, W) -> (B, 128, ~H/8, ~W/8); about 1/10 of ResNet-18's multiply-adds at 96x96."""
    layers, channels = [], 3
    for i, out in enumerate(SMALL_CNN_CHANNELS):
        stride = 2 if i < len(SMALL_CNN_CHANNELS) - 1 else 1
        layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1), group_norm_layer(out), nn.ReLU()]
        channels = out
    return nn.Sequential(*layers), channels


def _pretrained_weights(name: str, weights_name: str, without_weights_flag: str):
    enum = torchvision.models.get_model_weights(name)
    member = weights_name.split(".")[-1]
    if member not in enum.__members__ or weights_name.split(".")[0] not in (enum.__name__, member):
        raise ValueError(
            f"'{weights_name}' are not weights of {name}; choose one of "
            f"{', '.join(f'{enum.__name__}.{m}' for m in enum.__members__)}"
        )
    weights = enum[member]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return weights
    try:
        weights.get_state_dict(progress=False)  # downloads into the hub cache
    except Exception as error:  # URLError, timeouts, SSL and HTTP errors all mean the same here
        raise BackboneWeightsError(
            f"ImageNet weights for {name} are not in the torch hub cache and could not be downloaded "
            f"({type(error).__name__}). Put {weights.url} at {cached}, or train from scratch with "
            f"{without_weights_flag}"
        ) from None
    return weights


def resize_images(images: torch.Tensor, shape: list[int] | None) -> torch.Tensor:
    """(N, C, H, W) images -> (N, C, *shape), bilinear with antialiasing (what a camera's downscaler does);
    unchanged when `shape` is None or already theirs."""
    if shape is None or list(images.shape[-2:]) == list(shape):
        return images
    return torch.nn.functional.interpolate(
        images, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False
    )


class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax (Finn et al. 2016; Levine et al. 2016): the expected image position of each
    keypoint's attention map. (B, C, H, W) -> (B, K, 2) coordinates (x, y) in [-1, 1]."""

    def __init__(self, channels: int, height: int, width: int, num_keypoints: int):
        super().__init__()
        self.keypoint_maps = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))  # (H*W, 2)

    def forward(self, features: Tensor) -> Tensor:
        maps = self.keypoint_maps(features).flatten(2)  # (B, K, H*W)
        return maps.softmax(dim=-1) @ self.grid  # (B, K, 2)


def group_norm_layer(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group, what Diffusion Policy uses in place of batch norm."""
    return nn.GroupNorm(num_groups=channels // 16, num_channels=channels)
