"""ACT: Action Chunking with Transformers (Zhao et al., RSS 2023, https://arxiv.org/abs/2304.13705).

The model follows the paper's code and LeRobot's implementation of it:

    training:  [CLS, state, a_1..a_k] --CVAE encoder--> z ~ N(mu, sigma)          (only with use_vae)
    both:      [z, state, env_state, image tokens] --encoder--> memory   (each input once per observation step)
               k learned queries --decoder(memory)--> (B, k, Da) actions

Image tokens are the last ResNet feature map (B, D, h, w) flattened to h*w tokens with 2-D sinusoidal
position embeddings; the 1-D tokens get learned ones. At inference z = 0 (the prior's mean). With
n_obs_steps = To > 1 (a policylab extension) every input contributes its tokens for each of the To frames,
image tokens with a learned embedding of their frame added. Tensors are batch-first throughout: (B, S, D)
with S tokens of width D = dim_model, k = chunk_size.
"""

from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from policylab.constants import ACTION, OBS_ENV_STATE, OBS_STATE, PAD_SUFFIX
from policylab.policies.act.configuration_act import ACTConfig
from policylab.policies.backbones import resize_images, vision_trunk
from policylab.policies.pretrained import (
    ObservationError,
    ObservationHistory,
    PreTrainedPolicy,
    check_window,
    stack_history,
    standardize_observation,
)


class ACTPolicy(PreTrainedPolicy):
    """ACT with LeRobot's interface: `forward(batch)` for training, `select_action(obs)` for acting.

    Observations are in dataset units, un-normalized: vectors float (B, D); images either float
    (B, C, H, W) in [0, 1] (as the dataset gives them) or uint8 (B, H, W, C) (as the env gives them). A
    window of the To = n_obs_steps observation steps, (B, To, ...), is accepted too; `select_action` keeps
    the last To observations itself (the first repeated after `reset()`). The policy normalizes inputs and
    un-normalizes actions with the statistics it was built with (`dataset_stats`), saved with its weights.
    """

    config_class = ACTConfig

    def __init__(self, config: ACTConfig, dataset_stats: dict[str, dict] | None = None):
        super().__init__(config, dataset_stats)
        self.model = ACT(config)
        self.temporal_ensembler = (
            ACTTemporalEnsembler(config.temporal_ensemble_coeff, config.chunk_size)
            if config.temporal_ensemble_coeff is not None
            else None
        )
        self.reset()

    def reset(self) -> None:
        """Forget the observation history and queued actions; call at the start of every episode."""
        self._history = ObservationHistory(self.config.input_shapes, self.config.n_obs_steps)
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        if self.temporal_ensembler is not None:
            self.temporal_ensembler.reset()

    def inference_networks(self) -> list[nn.Module]:
        return [self.model]

    def camera_backbones(self) -> list[nn.Module]:
        return [self.model.backbone] if self.config.image_keys else []

    def camera_features(self, key: str, images: Tensor) -> Tensor:
        return self.model.camera_features(images)

    def _inputs(self, observation: dict[str, Tensor]) -> dict[str, Tensor]:
        """Normalized inputs (B, To, *shape); a single step is repeated To times."""
        shapes = self.config.input_shapes
        inputs = standardize_observation(observation, shapes, self.device)
        return self.normalize_inputs(stack_history(inputs, shapes, self.config.n_obs_steps))

    @torch.no_grad()
    def predict_action_chunk(self, observation: dict[str, Tensor]) -> Tensor:
        """The whole chunk the model predicts for this observation: (B, chunk_size, Da) in dataset units
        (computed in eval mode; the policy's mode is left as it was)."""
        with self.evaluating():
            actions, _ = self.model(self._inputs(observation))
        return self.unnormalize_outputs({ACTION: actions})[ACTION]

    @torch.no_grad()
    def select_action(self, observation: dict[str, Tensor]) -> Tensor:
        """The action to execute now, (B, Da). The model runs once every n_action_steps calls, or every call
        with temporal ensembling."""
        self._history.append(observation, self.device)
        if self.temporal_ensembler is not None:
            return self.temporal_ensembler.update(self.predict_action_chunk(self._history.window()))
        if not self._action_queue:
            chunk = self.predict_action_chunk(self._history.window())[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))  # n_action_steps x (B, Da)
        return self._action_queue.popleft()

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training loss on a batch from `LeRobotDataset(..., delta_timestamps=config.delta_timestamps(fps))`.

        Returns {"loss", "l1_loss", "kld_loss"}: loss = l1_loss + kl_weight * kld_loss, the L1 term
        averaged over the chunk with padded actions (past the episode's end) zeroed.
        """
        config = self.config
        check_window(batch, ACTION, config.chunk_size, config.action_delta_indices)
        if config.observation_delta_indices is not None:
            for key in config.input_shapes:
                check_window(batch, key, config.n_obs_steps, config.observation_delta_indices)
        inputs = self._inputs(batch)
        if batch[ACTION].shape[2:] != (config.action_dim,):
            raise ObservationError(
                f"batch['{ACTION}'] has shape {tuple(batch[ACTION].shape)}, expected (B, {config.chunk_size}, "
                f"{config.action_dim})"
            )
        target = self.normalize_targets({ACTION: batch[ACTION].to(self.device)})[ACTION]  # (B, k, Da)
        is_pad = batch[ACTION + PAD_SUFFIX].to(self.device).bool()  # (B, k)
        predicted, (mu, log_sigma_x2) = self.model(inputs, target, is_pad)

        l1_loss = ((predicted - target).abs() * ~is_pad.unsqueeze(-1)).mean()
        if mu is None:
            kld_loss = torch.zeros((), device=self.device)
        else:
            # KL(N(mu, sigma) || N(0, 1)) summed over latent dimensions, averaged over the batch; in float32
            # under mixed precision too.
            mu, log_sigma_x2 = mu.float(), log_sigma_x2.float()
            kld_loss = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()
        loss = l1_loss + config.kl_weight * kld_loss
        return {"loss": loss, "l1_loss": l1_loss.detach(), "kld_loss": kld_loss.detach()}


class ACTTemporalEnsembler:
    """Temporal ensembling (ACT paper, sec. 3.3) kept online.

    Every step the model predicts a chunk; each future time step accumulates the predictions made for it
    and executes their weighted mean, w_i = exp(-coeff * i) with i = 0 the oldest prediction (so a positive
    coeff favours older predictions, as in the paper).
    """

    def __init__(self, coeff: float, chunk_size: int):
        self.weights = torch.exp(-coeff * torch.arange(chunk_size, dtype=torch.float64))  # (k,)
        self.cumulative = torch.cumsum(self.weights, dim=0)  # (k,)
        self.reset()

    def reset(self) -> None:
        self.mean: Tensor | None = None  # (B, k-1, Da) running weighted mean for steps t .. t+k-2
        self.counts: Tensor | None = None  # (k-1,) predictions averaged into each

    def update(self, chunk: Tensor) -> Tensor:
        """chunk (B, k, Da) predicted at step t -> the action for step t, (B, Da)."""
        weights = self.weights.to(chunk.device, chunk.dtype)
        cumulative = self.cumulative.to(chunk.device, chunk.dtype)
        if self.mean is None:
            mean, counts = chunk, torch.ones(chunk.shape[1], dtype=torch.long, device=chunk.device)
        else:
            n = self.counts  # earlier predictions of each step; the new one gets weight w_n
            head = (self.mean * cumulative[n - 1, None] + chunk[:, :-1] * weights[n, None]) / cumulative[
                n, None
            ]
            mean = torch.cat([head, chunk[:, -1:]], dim=1)
            counts = torch.cat([n + 1, n.new_ones(1)])
        self.mean, self.counts = mean[:, 1:], counts[1:]
        return mean[:, 0]


class ACT(nn.Module):
    """The network: CVAE encoder (training only), vision backbone, transformer encoder-decoder."""

    def __init__(self, config: ACTConfig):
        super().__init__()
        self.config = config
        shapes = config.input_shapes
        d = config.dim_model
        self.state_dim = shapes[OBS_STATE][0] if OBS_STATE in shapes else 0
        self.env_state_dim = shapes[OBS_ENV_STATE][0] if OBS_ENV_STATE in shapes else 0
        self.image_keys = config.image_keys
        if not (self.state_dim or self.env_state_dim or self.image_keys):
            raise ValueError(
                f"ACT needs '{OBS_STATE}', '{OBS_ENV_STATE}' or an image among its inputs, got {list(shapes)}"
            )

        if config.use_vae:
            self.vae_encoder = ACTEncoder(config, config.n_vae_encoder_layers)
            self.vae_encoder_cls_embed = nn.Embedding(1, d)
            if self.state_dim:
                self.vae_encoder_robot_state_input_proj = nn.Linear(self.state_dim, d)
            self.vae_encoder_action_input_proj = nn.Linear(config.action_dim, d)
            self.vae_encoder_latent_output_proj = nn.Linear(d, 2 * config.latent_dim)
            n_vae_tokens = 1 + bool(self.state_dim) + config.chunk_size
            self.register_buffer("vae_encoder_pos_enc", sinusoidal_embedding_1d(n_vae_tokens, d).unsqueeze(0))

        if self.image_keys:
            self.backbone, channels = vision_trunk(
                config.vision_backbone,
                "IMAGENET1K_V1" if config.pretrained_backbone else None,
                replace_final_stride_with_dilation=config.replace_final_stride_with_dilation,
            )
            self.encoder_img_feat_input_proj = nn.Conv2d(channels, d, kernel_size=1)
            self.encoder_cam_feat_pos_embed = SinusoidalPositionEmbedding2d(d // 2)
            if config.n_obs_steps > 1:
                self.encoder_cam_step_embed = nn.Embedding(config.n_obs_steps, d)

        self.encoder = ACTEncoder(config, config.n_encoder_layers)
        self.decoder = ACTDecoder(config)
        self.encoder_latent_input_proj = nn.Linear(config.latent_dim, d)
        if self.state_dim:
            self.encoder_robot_state_input_proj = nn.Linear(self.state_dim, d)
        if self.env_state_dim:
            self.encoder_env_state_input_proj = nn.Linear(self.env_state_dim, d)
        n_1d_tokens = 1 + config.n_obs_steps * (bool(self.state_dim) + bool(self.env_state_dim))
        self.encoder_1d_feature_pos_embed = nn.Embedding(n_1d_tokens, d)
        self.decoder_pos_embed = nn.Embedding(config.chunk_size, d)
        self.action_head = nn.Linear(d, config.action_dim)
        for module in (self.encoder, self.decoder):  # as the paper's code (DETR's initialization)
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def encode_latent(self, inputs: dict[str, Tensor], actions: Tensor, action_is_pad: Tensor):
        """CVAE posterior from the current state: inputs (B, To, ...), actions (B, k, Da), pad (B, k) -> mu,
        log(sigma^2), each (B, L)."""
        batch_size = actions.shape[0]
        tokens = [self.vae_encoder_cls_embed.weight.expand(batch_size, 1, -1)]  # (B, 1, D)
        if self.state_dim:
            tokens.append(self.vae_encoder_robot_state_input_proj(inputs[OBS_STATE][:, -1:]))  # (B, 1, D)
        tokens.append(self.vae_encoder_action_input_proj(actions))  # (B, k, D)
        tokens = torch.cat(tokens, dim=1)  # (B, 1 [+1] + k, D)
        not_pad = torch.zeros(
            batch_size, tokens.shape[1] - actions.shape[1], dtype=torch.bool, device=actions.device
        )
        key_padding_mask = torch.cat([not_pad, action_is_pad], dim=1)
        cls_out = self.vae_encoder(tokens, self.vae_encoder_pos_enc, key_padding_mask)[:, 0]  # (B, D)
        latent_params = self.vae_encoder_latent_output_proj(cls_out)  # (B, 2L)
        return latent_params.chunk(2, dim=-1)

    def forward(
        self, inputs: dict[str, Tensor], actions: Tensor | None = None, action_is_pad: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """inputs (normalized, (B, To, ...)) -> actions (B, k, Da), and (mu, log_sigma_x2) when the CVAE ran."""
        batch_size = next(iter(inputs.values())).shape[0]
        mu = log_sigma_x2 = None
        if self.config.use_vae and actions is not None and self.training:
            mu, log_sigma_x2 = self.encode_latent(inputs, actions, action_is_pad)
            latent = mu + (log_sigma_x2 / 2).exp() * torch.randn_like(mu)  # reparameterization
        else:
            latent = torch.zeros(batch_size, self.config.latent_dim, device=self.action_head.weight.device)

        tokens = [self.encoder_latent_input_proj(latent).unsqueeze(1)]  # (B, 1, D)
        if self.state_dim:
            tokens.append(self.encoder_robot_state_input_proj(inputs[OBS_STATE]))  # (B, To, D)
        if self.env_state_dim:
            tokens.append(self.encoder_env_state_input_proj(inputs[OBS_ENV_STATE]))  # (B, To, D)
        tokens = [torch.cat(tokens, dim=1)]  # (B, n_1d, D)
        positions = [self.encoder_1d_feature_pos_embed.weight.unsqueeze(0)]  # (1, n_1d, D)
        for key in self.image_keys:  # one camera at a time: cameras may differ in size
            image_tokens, image_positions = self.image_tokens(inputs[key])
            tokens.append(image_tokens)
            positions.append(image_positions)
        tokens, positions = torch.cat(tokens, dim=1), torch.cat(positions, dim=1)  # (B, S, D), (1, S, D)

        memory = self.encoder(tokens, positions)
        queries = torch.zeros(batch_size, self.config.chunk_size, self.config.dim_model, device=tokens.device)
        decoded = self.decoder(queries, memory, positions, self.decoder_pos_embed.weight.unsqueeze(0))
        return self.action_head(decoded), (mu, log_sigma_x2)  # (B, k, Da)

    def camera_features(self, frames: Tensor) -> Tensor:
        """(N, C, H, W) normalized frames -> (N, C', h, w), resized first when resize_shape is set."""
        return self.backbone(resize_images(frames, self.config.resize_shape))

    def image_tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, To, C, H, W) -> tokens (B, To*h*w, D) and their positions (1, To*h*w, D)."""
        batch_size, n_steps = images.shape[:2]
        features = self.camera_features(images.flatten(0, 1))  # (B*To, C', h, w)
        tokens = self.encoder_img_feat_input_proj(features).flatten(2).transpose(1, 2)  # (B*To, h*w, D)
        positions = self.encoder_cam_feat_pos_embed(features).flatten(2).transpose(1, 2)  # (1, h*w, D)
        if n_steps > 1:
            step = self.encoder_cam_step_embed.weight[:, None, :]  # (To, 1, D)
            positions = (positions + step).flatten(0, 1).unsqueeze(0)  # (1, To*h*w, D)
        return tokens.reshape(batch_size, -1, tokens.shape[-1]), positions


class ACTEncoder(nn.Module):
    def __init__(self, config: ACTConfig, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([ACTEncoderLayer(config) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(config.dim_model) if config.pre_norm else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, key_padding_mask)
        return self.norm(x)


class ACTEncoderLayer(nn.Module):
    """Self-attention (positions added to queries and keys) and feed-forward, post- or pre-norm."""

    def __init__(self, config: ACTConfig):
        super().__init__()
        d = config.dim_model
        self.self_attn = nn.MultiheadAttention(d, config.n_heads, dropout=config.dropout, batch_first=True)
        self.feedforward = FeedForward(config)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.pre_norm = config.pre_norm

    def forward(self, x: Tensor, pos: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x) if self.pre_norm else x
        q = k = h + pos
        x = x + self.dropout(
            self.self_attn(q, k, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        )
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        x = x + self.feedforward(h)
        return x if self.pre_norm else self.norm2(x)


class ACTDecoder(nn.Module):
    def __init__(self, config: ACTConfig):
        super().__init__()
        self.layers = nn.ModuleList([ACTDecoderLayer(config) for _ in range(config.n_decoder_layers)])
        self.norm = nn.LayerNorm(config.dim_model)

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor, query_pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, memory_pos, query_pos)
        return self.norm(x)


class ACTDecoderLayer(nn.Module):
    """Self-attention over the queries, cross-attention into the encoder's memory, feed-forward."""

    def __init__(self, config: ACTConfig):
        super().__init__()
        d, heads, p = config.dim_model, config.n_heads, config.dropout
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.feedforward = FeedForward(config)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2 = nn.Dropout(p), nn.Dropout(p)
        self.pre_norm = config.pre_norm

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor, query_pos: Tensor) -> Tensor:
        h = self.norm1(x) if self.pre_norm else x
        q = k = h + query_pos
        x = x + self.dropout1(self.self_attn(q, k, h, need_weights=False)[0])
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        x = x + self.dropout2(
            self.cross_attn(h + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        )
        if not self.pre_norm:
            x = self.norm2(x)
        h = self.norm3(x) if self.pre_norm else x
        x = x + self.feedforward(h)
        return x if self.pre_norm else self.norm3(x)


class FeedForward(nn.Module):
    """linear -> activation -> dropout -> linear -> dropout (the residual is added by the caller)."""

    def __init__(self, config: ACTConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.dim_model, config.dim_feedforward)
        self.linear2 = nn.Linear(config.dim_feedforward, config.dim_model)
        self.dropout1, self.dropout2 = nn.Dropout(config.dropout), nn.Dropout(config.dropout)
        self.activation = F.relu if config.feedforward_activation == "relu" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout1(self.activation(self.linear1(x)))))


def sinusoidal_embedding_1d(n_positions: int, dim: int) -> Tensor:
    """(n_positions, dim) fixed embedding: sin on even and cos on odd channels, as in "Attention is all you need"."""
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    frequency = 10000 ** (2 * (torch.arange(dim) // 2) / dim)  # (dim,)
    angles = position / frequency  # (n, dim)
    return torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos()).float()


class SinusoidalPositionEmbedding2d(nn.Module):
    """DETR's 2-D embedding: for a (h, w) map, `dim` channels encode y and `dim` channels encode x, with
    coordinates normalized to (0, 2 pi]. Returns (1, 2 dim, h, w)."""

    def __init__(self, dim: int, temperature: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.temperature = temperature

    def forward(self, feature_map: Tensor) -> Tensor:
        h, w = feature_map.shape[-2:]
        device = feature_map.device
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + 1e-6) * 2 * math.pi  # (h,)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + 1e-6) * 2 * math.pi  # (w,)
        channel = torch.arange(self.dim, device=device)
        frequency = self.temperature ** (2 * (channel // 2) / self.dim)  # (dim,)
        even = channel % 2 == 0

        def embed(coordinate: Tensor) -> Tensor:  # (n,) -> (n, dim)
            angles = coordinate[:, None] / frequency
            return torch.where(even, angles.sin(), angles.cos())

        pos_y = embed(y)[:, None, :].expand(h, w, self.dim)
        pos_x = embed(x)[None, :, :].expand(h, w, self.dim)
        return torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1).unsqueeze(0)  # (1, 2 dim, h, w)
