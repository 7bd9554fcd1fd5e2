"""Diffusion Policy (Chi et al., RSS 2023, https://arxiv.org/abs/2303.04137), CNN variant, as in LeRobot.

    observations (B, To, ...) --ObservationEncoder--> global condition (B, To * D_obs)
    training:  a (B, T, Da) + noise at a random step k --ConditionalUnet1d(k, cond)--> noise (or a)
    sampling:  N(0, I) (B, T, Da) --num_inference_steps of DDPM or DDIM (diffusers)--> actions

The noise schedulers are diffusers' (`DDPMScheduler`, `DDIMScheduler`); both share the training noise
schedule, so the sampler and its number of steps can be changed on a trained model. A student distilled
for consistency (`consistency.py`, `policylab distill`) samples with `LCMScheduler` in 1 to a few steps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler
from torch import Tensor, nn

from policylab.constants import ACTION, FEATURE_MAP_SUFFIX, PAD_SUFFIX
from policylab.policies.diffusion.conditional_unet1d import ConditionalUnet1d
from policylab.policies.diffusion.configuration_diffusion import DiffusionConfig
from policylab.policies.diffusion.observation_encoder import ObservationEncoder
from policylab.policies.pretrained import (
    ObservationError,
    ObservationHistory,
    PreTrainedPolicy,
    check_window,
    stack_history,
    standardize_observation,
)


def make_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler | DDIMScheduler | LCMScheduler:
    schedule = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        clip_sample=config.clip_sample,
        clip_sample_range=config.clip_sample_range,
        prediction_type=config.prediction_type,
    )
    if config.noise_scheduler_type == "LCM":
        return LCMScheduler(**schedule, original_inference_steps=config.original_inference_steps)
    scheduler_class = DDPMScheduler if config.noise_scheduler_type == "DDPM" else DDIMScheduler
    return scheduler_class(**schedule, timestep_spacing=config.timestep_spacing)


class FrameFeatureCache:
    """Image features of the frames in the observation history while acting: each frame is encoded once, however
    many windows it stays in (frames are known by identity: the history keeps the tensors it was given)."""

    def __init__(self):
        self.known: dict[str, list[tuple[Tensor, Tensor]]] = {}  # camera -> [(frame, its features)]
        self.encoded = self.reused = 0  # frames encoded, and frames of windows served without encoding

    def features(self, key: str, frames: list[Tensor], encode: Callable[[Tensor], Tensor]) -> Tensor:
        """The To frames of a window, each (B, C, H, W) -> their features (B, To, F); `encode` maps
        (N, C, H, W) frames to (N, F)."""
        unique = [frame for i, frame in enumerate(frames) if all(frame is not f for f in frames[:i])]
        cached = {id(f): value for f, value in self.known.get(key, [])}  # `known` keeps those frames alive
        missing = [frame for frame in unique if id(frame) not in cached]
        if missing:
            encoded = encode(torch.cat(missing)).split(len(frames[0]))
            cached.update({id(f): value for f, value in zip(missing, encoded, strict=True)})
        self.encoded += len(missing)
        self.reused += len(frames) - len(missing)
        self.known[key] = [(frame, cached[id(frame)]) for frame in unique]
        return torch.stack([cached[id(frame)] for frame in frames], dim=1)


class DiffusionPolicy(PreTrainedPolicy):
    """Diffusion Policy with LeRobot's interface: `forward(batch)` for training, `select_action(obs)` to act.

    Observations are in dataset units, un-normalized: vectors float (B, D); images float (B, C, H, W) in
    [0, 1] or uint8 (B, H, W, C). They may also carry the To observation steps, (B, To, ...), as a dataset
    window does. `select_action` keeps the last n_obs_steps observations itself (the first one repeated
    after `reset()`), samples a horizon when its action queue is empty, and executes the n_action_steps
    actions that start at the current step; a frame still in the history keeps the features it was encoded
    to. Pass a `torch.Generator` for reproducible samples.
    """

    config_class = DiffusionConfig
    accepts_feature_maps = True

    def __init__(self, config: DiffusionConfig, dataset_stats: dict[str, dict] | None = None):
        super().__init__(config, dataset_stats)
        self.observation_encoder = ObservationEncoder(config)
        self.unet = ConditionalUnet1d(
            config.action_dim,
            self.observation_encoder.output_dim,
            config.down_dims,
            config.kernel_size,
            config.n_groups,
            config.diffusion_step_embed_dim,
            config.use_film_scale_modulation,
            config.n_res_blocks,
            config.n_mid_res_blocks,
        )
        self.noise_scheduler = make_noise_scheduler(config)
        self.reset()

    def reset(self) -> None:
        """Forget the observation history and queued actions; call at the start of every episode."""
        self._history = ObservationHistory(self.config.input_shapes, self.config.n_obs_steps)
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        self.frame_features = FrameFeatureCache()

    def camera_backbones(self) -> list[nn.Module]:
        return [encoder.backbone for encoder in self.observation_encoder.rgb_encoders]

    def camera_features(self, key: str, images: Tensor) -> Tensor:
        return self.observation_encoder.encoder_of(key).feature_map(images)

    def inference_networks(self) -> list[nn.Module]:
        return [self.unet]  # called once per denoising step; the observation encoder runs once per chunk

    @torch.no_grad()
    def predict_action_chunk(
        self, observation: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """The sampled horizon, (B, horizon, Da) in dataset units; index n_obs_steps - 1 is the current step
        (computed in eval mode; the policy's mode is left as it was)."""
        with self.evaluating():
            shapes = self.config.input_shapes
            inputs = stack_history(
                standardize_observation(observation, shapes, self.device), shapes, self.config.n_obs_steps
            )
            inputs = self.normalize_inputs(inputs)
            actions = self.sample(self.observation_encoder(inputs), generator)
        return self.unnormalize_outputs({ACTION: actions})[ACTION]

    @torch.no_grad()
    def select_action(
        self, observation: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """The action to execute now, (B, Da); samples a new horizon every n_action_steps calls."""
        self._history.append(observation, self.device)
        if not self._action_queue:
            horizon = self._chunk_from_history(generator)
            start = self.config.n_obs_steps - 1
            self._action_queue.extend(horizon[:, start : start + self.config.n_action_steps].transpose(0, 1))
        return self._action_queue.popleft()

    @torch.no_grad()
    def _chunk_from_history(self, generator: torch.Generator | None) -> Tensor:
        """predict_action_chunk of the history's window, (B, horizon, Da), with its frames' cached features."""
        encoder = self.observation_encoder
        with self.evaluating():
            vectors = self.normalize_inputs(self._history.window(encoder.vector_keys))
            image_features = {
                key: self.frame_features.features(
                    key,
                    list(self._history.steps[key]),
                    lambda images, key=key: encoder.encode_frames(
                        key, self.normalize_inputs({key: images})[key]
                    ),
                )
                for key in encoder.image_keys
            }
            actions = self.sample(encoder.condition(vectors, image_features), generator)
        return self.unnormalize_outputs({ACTION: actions})[ACTION]

    def sample(self, global_cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Denoise N(0, I) into normalized actions (B, horizon, Da) with the configured scheduler and steps."""
        config = self.config
        shape = (global_cond.shape[0], config.horizon, config.action_dim)
        if generator is not None and generator.device.type != "cpu" and generator.device != self.device:
            raise ValueError(f"the generator is on {generator.device} and the policy on {self.device}")
        sample = torch.randn(
            shape, generator=generator, device=generator.device if generator else self.device
        )
        sample = sample.to(self.device)
        self.noise_scheduler.set_timesteps(config.inference_steps)  # timesteps stay on the CPU: no GPU syncs
        for t in self.noise_scheduler.timesteps:
            timestep = torch.full((shape[0],), int(t), dtype=torch.long, device=self.device)
            model_output = self.unet(sample, timestep, global_cond)
            sample = self.noise_scheduler.step(model_output, t, sample, generator=generator).prev_sample
        return sample

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Denoising loss on a batch from `LeRobotDataset(..., delta_timestamps=config.delta_timestamps(fps))`:
        MSE between the UNet's output and the noise (or the clean actions, with prediction_type=sample)."""
        config = self.config
        global_cond, actions = self.encode_batch(batch)
        noise = torch.randn_like(actions)
        timesteps = torch.randint(0, config.num_train_timesteps, (actions.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(actions, noise, timesteps)
        predicted = self.unet(noisy, timesteps, global_cond)
        target = noise if config.prediction_type == "epsilon" else actions
        loss = F.mse_loss(predicted, target, reduction="none")  # (B, T, Da)
        return {"loss": self.mean_over_actions(loss, batch)}

    def encode_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """A training batch as (global condition (B, To * D_obs), normalized actions (B, T, Da)). A camera may
        come as its trunk's feature maps, `<camera>.feature_map` (B, To, C', h, w), in place of its frames."""
        config = self.config
        check_window(batch, ACTION, config.horizon, config.action_delta_indices)
        maps = {
            k + FEATURE_MAP_SUFFIX: batch[k + FEATURE_MAP_SUFFIX].to(self.device)
            for k in config.image_keys
            if k + FEATURE_MAP_SUFFIX in batch
        }
        shapes = {k: s for k, s in config.input_shapes.items() if k + FEATURE_MAP_SUFFIX not in maps}
        for key in shapes:
            check_window(batch, key, config.n_obs_steps, config.observation_delta_indices)
        for key, value in maps.items():
            if value.ndim != 5 or value.shape[1] != config.n_obs_steps:
                raise ObservationError(
                    f"batch['{key}'] has shape {tuple(value.shape)}, expected (B, {config.n_obs_steps}, C, h, w)"
                )
        inputs = self.normalize_inputs(standardize_observation(batch, shapes, self.device))
        actions = self.normalize_targets({ACTION: batch[ACTION].to(self.device)})[ACTION]
        return self.observation_encoder(inputs | maps), actions

    def mean_over_actions(self, loss: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Mean of a per-action loss (B, T, Da), over real (not padded) actions with do_mask_loss_for_padding."""
        if not self.config.do_mask_loss_for_padding:
            return loss.mean()
        valid = ~batch[ACTION + PAD_SUFFIX].to(self.device).bool().unsqueeze(-1)  # (B, T, 1)
        return (loss * valid).sum() / (valid.sum() * loss.shape[-1]).clamp_min(1)
