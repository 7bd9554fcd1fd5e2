"""The conditional 1-D temporal UNet of Diffusion Policy (Chi et al. 2023, sec. 3.2; Janner et al. 2022).

It denoises an action sequence (B, T, Da), convolving over time. Every residual block is conditioned by FiLM
on [diffusion-step embedding, global observation feature]: the conditioning gives a per-channel scale and
bias (or a bias only). The horizon T halves at each level but the last, so T must be a multiple of
2^(len(down_dims) - 1). Each level has n_res_blocks residual blocks and the middle n_mid_res_blocks (the
paper: 2 and 2); at batch 1 a call costs about the same per block whatever its width, so fewer blocks make a
faster network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

FINAL_GROUPS = 8  # the final conv block's group norm (Chi et al.'s code hard-codes it)


class DiffusionStepEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion step k, then an MLP: (B,) -> (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, timestep: Tensor) -> Tensor:
        half = self.dim // 2
        frequency = torch.exp(-math.log(10000) * torch.arange(half, device=timestep.device) / (half - 1))
        angles = timestep.float()[:, None] * frequency[None, :]  # (B, dim/2)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, keeping the length."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class ConditionalResidualBlock1d(nn.Module):
    """Two conv blocks, FiLM-modulated in between by the conditioning vector, plus a residual connection."""

    def __init__(self, in_channels, out_channels, cond_dim, kernel_size, n_groups, use_film_scale_modulation):
        super().__init__()
        self.out_channels = out_channels
        self.use_scale = use_film_scale_modulation
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.cond_encoder = nn.Sequential(
            nn.Mish(), nn.Linear(cond_dim, out_channels * (2 if self.use_scale else 1))
        )
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x (B, C_in, T), cond (B, cond_dim) -> (B, C_out, T)."""
        out = self.conv1(x)
        film = self.cond_encoder(cond).unsqueeze(-1)  # (B, C_out or 2 C_out, 1)
        if self.use_scale:
            scale, bias = film.split(self.out_channels, dim=1)
            out = scale * out + bias
        else:
            out = out + film
        return self.conv2(out) + self.residual_conv(x)


class ConditionalUnet1d(nn.Module):
    """(B, T, Da) noisy actions, (B,) diffusion steps, (B, G) global condition -> (B, T, Da)."""

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: list[int],
        kernel_size: int = 5,
        n_groups: int = 8,
        diffusion_step_embed_dim: int = 128,
        use_film_scale_modulation: bool = True,
        n_res_blocks: int = 2,
        n_mid_res_blocks: int = 2,
    ):
        super().__init__()
        self.diffusion_step_encoder = DiffusionStepEmbedding(diffusion_step_embed_dim)
        cond_dim = diffusion_step_embed_dim + global_cond_dim

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1d:
            return ConditionalResidualBlock1d(
                c_in, c_out, cond_dim, kernel_size, n_groups, use_film_scale_modulation
            )

        levels = list(zip([action_dim, *down_dims[:-1]], down_dims, strict=True))  # (C_in, C_out) per level
        self.down_modules = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            is_last = i == len(levels) - 1
            downsample = nn.Identity() if is_last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            repeats = [block(c_out, c_out) for _ in range(n_res_blocks - 1)]
            self.down_modules.append(nn.ModuleList([block(c_in, c_out), *repeats, downsample]))
        self.mid_modules = nn.ModuleList(
            [block(down_dims[-1], down_dims[-1]) for _ in range(n_mid_res_blocks)]
        )
        self.up_modules = nn.ModuleList()
        for c_out, c_in in reversed(levels[1:]):  # back up, concatenating the skip connection
            upsample = nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1)
            repeats = [block(c_out, c_out) for _ in range(n_res_blocks - 1)]
            self.up_modules.append(nn.ModuleList([block(c_in * 2, c_out), *repeats, upsample]))
        self.final_conv = nn.Sequential(  # 8 groups whatever n_groups, as in the paper's code and LeRobot's
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, FINAL_GROUPS),
            nn.Conv1d(down_dims[0], action_dim, 1),
        )

    def forward(self, x: Tensor, timestep: Tensor, global_cond: Tensor) -> Tensor:
        x = x.transpose(1, 2)  # (B, Da, T): convolve over time
        cond = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)  # (B, cond_dim)
        skips = []
        for *blocks, downsample in self.down_modules:
            x = self._run_blocks(blocks, x, cond)
            skips.append(x)
            x = downsample(x)
        x = self._run_blocks(self.mid_modules, x, cond)
        for *blocks, upsample in self.up_modules:
            x = upsample(self._run_blocks(blocks, torch.cat([x, skips.pop()], dim=1), cond))
        return self.final_conv(x).transpose(1, 2)  # (B, T, Da)

    @staticmethod
    def _run_blocks(blocks, x: Tensor, cond: Tensor) -> Tensor:
        for block in blocks:
            x = block(x, cond)
        return x
