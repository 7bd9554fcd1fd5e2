"""ACT's configuration: the knobs of LeRobot's `ACTConfig`, with the same names, defaults and meaning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from policylab.policies.backbones import BACKBONES, SMALL_CNN
from policylab.policies.pretrained import PreTrainedConfig, TrainingPreset

ACTIVATIONS = ("relu", "gelu")


@PreTrainedConfig.register_subclass("act")
@dataclass
class ACTConfig(PreTrainedConfig):
    """ACT: Action Chunking with Transformers (Zhao et al., RSS 2023), as in LeRobot.

    n_obs_steps: observation frames per prediction. 1, the current frame, is ACT as published and as LeRobot
        has it; k > 1 (a policylab extension) also feeds the k - 1 frames before it, as extra encoder tokens
        with their own learned positions, so the model sees motion (the direction a demonstrator was going).
    chunk_size: actions predicted per model call (the chunk, 100 in the paper: 10 s at PushT's 10 Hz).
    n_action_steps: actions executed from a chunk before the model runs again (<= chunk_size; 1 with
        temporal ensembling).
    vision_backbone: the camera encoder: a torchvision ResNet (resnet18, resnet34, resnet50) or small_cnn, four
        3x3 convolutions with group norm for small frames on a CPU (from scratch: no pretrained weights).
    resize_shape: resize every camera image to [height, width] before the backbone (e.g. [120, 160] for a
        480x640 robot camera on a CPU); null keeps each camera's own size.
    pretrained_backbone: start the backbone from torchvision's ImageNet weights (read from the torch hub cache,
        or downloaded there). LeRobot does so by default; policylab does not, so that training works the same
        offline and on any machine: pass true to use them.
    replace_final_stride_with_dilation: dilate the last ResNet stage instead of striding (2x more tokens).
    pre_norm: layer norm before attention and feed-forward blocks (post-norm otherwise, as in the paper).
    dim_model: transformer width.
    n_heads: attention heads.
    dim_feedforward: feed-forward width.
    feedforward_activation: relu or gelu.
    n_encoder_layers: transformer encoder layers.
    n_decoder_layers: transformer decoder layers. The paper's code builds 7 but, through a bug, uses only
        the first (https://github.com/tonyzhaozh/act/issues/25); 1 gives the same model.
    n_layers: the tutorials' name for n_decoder_layers (either may be given; they are kept equal).
    use_vae: train with the CVAE objective (a latent from a transformer over state and actions).
    latent_dim: size of the CVAE latent.
    n_vae_encoder_layers: layers of the CVAE encoder.
    kl_weight: weight of the KL term in the loss.
    dropout: dropout in the transformer layers.
    temporal_ensemble_coeff: when set (e.g. 0.01), run the model every step and average the overlapping
        chunk predictions with weights exp(-coeff * i), oldest prediction i = 0 (needs n_action_steps=1).
    """

    n_obs_steps: int = 1
    chunk_size: int = 100
    n_action_steps: int = 100
    vision_backbone: str = "resnet18"
    resize_shape: list[int] | None = None
    pretrained_backbone: bool = False
    replace_final_stride_with_dilation: bool = False
    pre_norm: bool = False
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    feedforward_activation: str = "relu"
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    n_layers: int | None = None
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    kl_weight: float = 10.0
    dropout: float = 0.1
    temporal_ensemble_coeff: float | None = None

    def __post_init__(self):
        super().__post_init__()
        self.resize_shape = list(self.resize_shape) if self.resize_shape else None
        if self.n_layers is None:
            self.n_layers = self.n_decoder_layers
        elif self.n_decoder_layers not in (1, self.n_layers):
            raise ValueError(
                f"n_layers={self.n_layers} and n_decoder_layers={self.n_decoder_layers} disagree "
                "(n_layers is the tutorials' name for n_decoder_layers; give one)"
            )
        self.n_decoder_layers = self.n_layers
        if self.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps={self.n_obs_steps} must be at least 1")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} must be in 1..chunk_size={self.chunk_size}"
            )
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            raise ValueError(
                "temporal_ensemble_coeff runs the model every step and needs n_action_steps=1, "
                f"got {self.n_action_steps}"
            )
        if self.resize_shape is not None and (len(self.resize_shape) != 2 or min(self.resize_shape) < 1):
            raise ValueError(f"resize_shape={self.resize_shape}: expected [height, width]")
        if self.vision_backbone not in BACKBONES:
            raise ValueError(f"vision_backbone '{self.vision_backbone}' is not one of {', '.join(BACKBONES)}")
        if self.vision_backbone == SMALL_CNN and (
            self.pretrained_backbone or self.replace_final_stride_with_dilation
        ):
            raise ValueError(
                f"vision_backbone={SMALL_CNN} trains from scratch with its own strides: it takes neither "
                "pretrained_backbone=true nor replace_final_stride_with_dilation=true"
            )
        if self.feedforward_activation not in ACTIVATIONS:
            raise ValueError(
                f"feedforward_activation '{self.feedforward_activation}' is not one of {', '.join(ACTIVATIONS)}"
            )
        if self.dim_model % self.n_heads or self.dim_model % 2:
            raise ValueError(
                f"dim_model={self.dim_model} must be even and divisible by n_heads={self.n_heads}"
            )

    @property
    def observation_delta_indices(self) -> list[int] | None:
        return None if self.n_obs_steps == 1 else list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    def without_pretrained_weights(self) -> ACTConfig:
        return dataclasses.replace(self, pretrained_backbone=False)

    def training_preset(self) -> TrainingPreset:
        return TrainingPreset(lr=1e-5, lr_backbone=1e-5, weight_decay=1e-4)
