"""Diffusion Policy's configuration: the knobs of LeRobot's `DiffusionConfig`, same names and meaning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from policylab.constants import OBS_IMAGE
from policylab.policies.backbones import BACKBONES, SMALL_CNN
from policylab.policies.pretrained import PreTrainedConfig, TrainingPreset

NOISE_SCHEDULERS = ("DDPM", "DDIM", "LCM")
PREDICTION_TYPES = ("epsilon", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


@PreTrainedConfig.register_subclass("diffusion")
@dataclass
class DiffusionConfig(PreTrainedConfig):
    """Diffusion Policy (Chi et al., RSS 2023), CNN-based, as in LeRobot.

    n_obs_steps: observation frames the policy conditions on (To).
    horizon: actions the diffusion model generates per sample (T), starting at the first observation step.
    n_action_steps: actions executed from each sample before sampling again (Ta); the executed ones start at
        the current step (index n_obs_steps - 1 of the horizon).
    vision_backbone: the camera encoder: a torchvision ResNet (resnet18, resnet34, resnet50) or small_cnn, four
        3x3 convolutions with group norm for small frames on a CPU (from scratch: no pretrained weights).
    pretrained_backbone_weights: torchvision weights to start from, e.g. "ResNet18_Weights.IMAGENET1K_V1"
        (needs use_group_norm=false: batch-norm statistics cannot become group norm). Default: none.
    use_group_norm: replace the backbone's batch norm with group norm (16 channels per group).
    resize_shape: resize every camera image to [height, width] before cropping (e.g. [120, 160] for a 480x640
        robot camera on a CPU); cameras of different sizes then share one encoder. null keeps their sizes.
    crop_shape: crop images to [height, width] before the backbone (random in training, centred at
        inference when crop_is_random); empty or null for no crop.
    crop_is_random: random crops in training (centre crops are always used at inference).
    spatial_softmax_num_keypoints: keypoints of the spatial-softmax head on the feature map.
    use_separate_rgb_encoder_per_camera: one backbone per camera instead of a shared one.
    down_dims: channels of the UNet's levels (the horizon halves at each level but the last).
    n_res_blocks: residual blocks at each UNet level (the paper and LeRobot: 2). One makes a call at batch 1
        about 40 % cheaper: a small network for a fast consistency student.
    n_mid_res_blocks: residual blocks in the UNet's middle, 0 or more (default: n_res_blocks). At batch 1 on a
        CPU each costs about as much as any other block (~0.3 ms on the CPU preset): a fast consistency
        student drops them (`policylab train --init_from=TEACHER --policy.n_mid_res_blocks=0`, docs/distillation.md).
    kernel_size: 1-D convolution kernel size in the UNet.
    n_groups: group-norm groups in the UNet.
    diffusion_step_embed_dim: size of the diffusion-step embedding.
    use_film_scale_modulation: FiLM with scale and bias (else bias only) from the conditioning.
    noise_scheduler_type: DDPM or DDIM (may be changed on a trained model: both share the training noise), or
        LCM: consistency sampling in 1 to a few steps, for a student trained by `policylab distill`.
    num_train_timesteps: diffusion steps of the forward process.
    beta_schedule: linear, scaled_linear or squaredcos_cap_v2.
    beta_start, beta_end: first and last beta of linear schedules.
    prediction_type: what the network predicts: epsilon (the noise) or sample (the clean actions).
    clip_sample: clip each denoised estimate to [-clip_sample_range, clip_sample_range].
    clip_sample_range: see clip_sample.
    num_inference_steps: denoising steps when sampling (default num_train_timesteps; e.g. 10 with DDIM; 1 to
        3 with LCM).
    timestep_spacing: DDPM and DDIM with fewer inference than training steps: which training steps they visit.
        linspace: evenly from the last (pure noise) to 0 (DDIM-10: 99, 88, ..., 0); leading, the default of
        diffusers and LeRobot: from 0 up, which starts 10 % early (90, 80, ..., 0) from a sample the network
        was trained to see at 99; trailing: from 99 down, ending at 9. LCM has its own steps.
    original_inference_steps: LCM only: the teacher's discretisation the student was distilled on, in steps
        (num_train_timesteps / skip); LCM samples from these time steps.
    do_mask_loss_for_padding: leave actions past the episode's end out of the loss.
    drop_n_last_frames: frames at the end of each episode that training does not start windows from (their
        windows would be mostly padding). Default: horizon - n_action_steps - n_obs_steps + 1, as LeRobot.
    """

    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    vision_backbone: str = "resnet18"
    pretrained_backbone_weights: str | None = None
    use_group_norm: bool = True
    resize_shape: list[int] | None = None
    crop_shape: list[int] | None = field(default_factory=lambda: [84, 84])
    crop_is_random: bool = True
    spatial_softmax_num_keypoints: int = 32
    use_separate_rgb_encoder_per_camera: bool = False
    down_dims: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    n_res_blocks: int = 2
    n_mid_res_blocks: int | None = None
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    use_film_scale_modulation: bool = True
    noise_scheduler_type: str = "DDPM"
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    num_inference_steps: int | None = None
    timestep_spacing: str = "linspace"
    original_inference_steps: int = 10
    do_mask_loss_for_padding: bool = False
    drop_n_last_frames: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.drop_n_last_frames is None:
            self.drop_n_last_frames = self.horizon - self.n_action_steps - self.n_obs_steps + 1
        self.down_dims = list(self.down_dims)
        self.crop_shape = list(self.crop_shape) if self.crop_shape else None
        self.resize_shape = list(self.resize_shape) if self.resize_shape else None
        choices = {
            "noise_scheduler_type": NOISE_SCHEDULERS,
            "prediction_type": PREDICTION_TYPES,
            "beta_schedule": BETA_SCHEDULES,
            "timestep_spacing": TIMESTEP_SPACINGS,
            "vision_backbone": BACKBONES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}='{getattr(self, name)}' is not one of {', '.join(allowed)}")
        if min(self.n_obs_steps, self.n_action_steps, self.n_res_blocks) < 1:
            raise ValueError("n_obs_steps, n_action_steps and n_res_blocks must be at least 1")
        if self.n_mid_res_blocks is None:
            self.n_mid_res_blocks = self.n_res_blocks
        if self.n_mid_res_blocks < 0:
            raise ValueError(f"n_mid_res_blocks={self.n_mid_res_blocks} must be 0 or more")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps = {self.n_obs_steps - 1 + self.n_action_steps} actions are "
                f"executed from a horizon of {self.horizon}; shorten them or lengthen the horizon"
            )
        if self.down_dims and self.down_dims[0] % 8:
            raise ValueError(
                f"down_dims[0]={self.down_dims[0]} must be a multiple of 8 (the UNet's last group norm)"
            )
        downsampling = 2 ** (len(self.down_dims) - 1)
        if not self.down_dims or self.horizon % downsampling:
            raise ValueError(
                f"horizon={self.horizon} must be a multiple of {downsampling} (the UNet halves it "
                f"{len(self.down_dims) - 1} times with down_dims={self.down_dims})"
            )
        if (
            self.num_inference_steps is not None
            and not 1 <= self.num_inference_steps <= self.num_train_timesteps
        ):
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} must be in 1..{self.num_train_timesteps}"
            )
        if self.num_train_timesteps % self.original_inference_steps:
            raise ValueError(
                f"original_inference_steps={self.original_inference_steps} must divide "
                f"num_train_timesteps={self.num_train_timesteps}"
            )
        if self.noise_scheduler_type == "LCM" and self.inference_steps > self.original_inference_steps:
            raise ValueError(
                f"LCM samples at most original_inference_steps={self.original_inference_steps} steps, "
                f"num_inference_steps={self.num_inference_steps} asked for more"
            )
        if self.pretrained_backbone_weights and self.vision_backbone == SMALL_CNN:
            raise ValueError(
                f"vision_backbone={SMALL_CNN} has no pretrained weights (pretrained_backbone_weights=null)"
            )
        if self.pretrained_backbone_weights and self.use_group_norm:
            raise ValueError(
                "pretrained_backbone_weights need use_group_norm=false (their batch-norm statistics cannot be "
                "turned into group norm)"
            )
        if self.crop_shape is not None and len(self.crop_shape) != 2:
            raise ValueError(f"crop_shape={self.crop_shape}: expected [height, width]")
        if self.resize_shape is not None and (len(self.resize_shape) != 2 or min(self.resize_shape) < 1):
            raise ValueError(f"resize_shape={self.resize_shape}: expected [height, width]")
        sizes = {tuple(self.image_size(key)) for key in self.image_keys}
        if len(sizes) > 1 and not self.use_separate_rgb_encoder_per_camera:
            raise ValueError(
                f"cameras of different sizes {sorted(sizes)} need use_separate_rgb_encoder_per_camera=true "
                "(or one --policy.resize_shape for all)"
            )
        for key in self.image_keys:
            if self.crop_shape and any(
                c > s for c, s in zip(self.crop_shape, self.image_size(key), strict=True)
            ):
                raise ValueError(
                    f"crop_shape={self.crop_shape} is larger than '{key}' {self.image_size(key)} (give a smaller "
                    "--policy.crop_shape, or --policy.crop_shape=null)"
                )

    def image_size(self, key: str) -> list[int]:
        """[height, width] of camera `key` as the encoder sees it, before cropping."""
        return list(self.resize_shape or self.input_shapes[key][1:])

    def default_normalization_mode(self, key: str) -> str:
        return "mean_std" if key.startswith(OBS_IMAGE) else "min_max"

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1 - self.n_obs_steps + self.horizon))

    @property
    def frames_dropped_at_episode_end(self) -> int:
        return self.drop_n_last_frames

    @property
    def inference_steps(self) -> int:
        return self.num_inference_steps or self.num_train_timesteps

    def without_pretrained_weights(self) -> DiffusionConfig:
        return dataclasses.replace(self, pretrained_backbone_weights=None)

    def training_preset(self) -> TrainingPreset:
        return TrainingPreset(
            lr=1e-4,
            weight_decay=1e-6,
            betas=(0.95, 0.999),
            scheduler="cosine",
            warmup_steps=500,
            ema_decay=0.9999,
        )
