"""Consistency distillation of a trained Diffusion Policy into a 1-to-few-step sampler.

The variant is latent-consistency-model distillation (Luo et al. 2023, https://arxiv.org/abs/2310.04378)
on the teacher's own DDPM noise schedule, with Consistency Policy's denoising regularizer (Prasad et al.
2024, https://arxiv.org/abs/2405.07503):

    N noise levels t_n = n * k - 1 (n = 1..N, k = num_train_timesteps / N) of the teacher's schedule
    x_t   = sqrt(a_t) a + sqrt(1 - a_t) eps                     a: demonstrated actions, t one of the t_n
    f(x, t) = c_skip(t) x + c_out(t) a_hat(x, t)               the student's consistency function (LCM's
                                                               boundary scalings: f(x, 0) = x)
    x_prev  = m DDIM steps of the frozen teacher from x_t to s = t - m k (not below 0), m ~ U{1..M}
    loss    = pseudo-Huber(f_student(x_t, t) - stopgrad f_student(x_prev, s)) + w * denoising loss

M = 1 is LCM's one teacher step between neighbouring levels. A larger M lets the teacher solve more of the
way (as Consistency Trajectory Models do), so the target leans less on the student's own, still wrong,
estimates at lower levels; M = N (the default) makes some targets the teacher's whole N-step solve.

The target network is an exponential moving average of the student's UNet (decay 0.95, as in consistency
models and LCM), updated before every step; the student starts from the teacher's weights or from another
trained network's (`policylab distill --student.path`). A student is a normal `diffusion` policy whose
noise_scheduler_type is LCM (predicting actions, prediction_type=sample): diffusers' `LCMScheduler` samples it
with the same c_skip / c_out, in num_inference_steps of the N levels.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from policylab.policies.diffusion.modeling_diffusion import DiffusionPolicy


def check_teacher_steps(teacher_steps: int | None, original_inference_steps: int) -> None:
    if teacher_steps is not None and not 1 <= teacher_steps <= original_inference_steps:
        raise ValueError(
            f"teacher_steps={teacher_steps} must be in 1..original_inference_steps={original_inference_steps}"
        )


class ConsistencyDistillation(nn.Module):
    """The training objective of a consistency student: `forward(batch)` returns the loss terms."""

    def __init__(
        self,
        student: DiffusionPolicy,
        teacher: DiffusionPolicy,
        dsm_weight: float,
        huber_c: float,
        target_decay: float,
        teacher_steps: int | None = None,
    ):
        super().__init__()
        config = student.config
        if config.noise_scheduler_type != "LCM":
            raise ValueError(
                "the student of a consistency distillation samples with noise_scheduler_type=LCM"
            )
        self.student = student
        self.teacher = teacher.to(student.device).requires_grad_(False).eval()
        self.dsm_weight, self.huber_c, self.target_decay = dsm_weight, huber_c, target_decay
        check_teacher_steps(teacher_steps, config.original_inference_steps)
        self.teacher_steps = teacher_steps or config.original_inference_steps  # M (default N)
        self.target_unet = copy.deepcopy(student.unet).requires_grad_(False)  # EMA of the student's UNet
        self.skip = config.num_train_timesteps // config.original_inference_steps
        levels = torch.arange(1, config.original_inference_steps + 1) * self.skip - 1  # (N,) 9, 19, ..., 99
        self.register_buffer("levels", levels.to(student.device), persistent=False)
        alphas = student.noise_scheduler.alphas_cumprod.to(student.device, torch.float32)
        self.register_buffer("alphas_cumprod", alphas, persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        student = self.student
        self.update_target()
        global_cond, actions = student.encode_batch(batch)  # (B, To * D_obs), (B, T, Da)
        with torch.no_grad():
            teacher_cond, _ = self.teacher.encode_batch(batch)
        t = self.levels[
            torch.randint(0, len(self.levels), (actions.shape[0],), device=actions.device)
        ]  # (B,)
        noise = torch.randn_like(actions)
        noisy = student.noise_scheduler.add_noise(actions, noise, t)

        predicted, output = self.consistency(student.unet, noisy, t, global_cond)
        with torch.no_grad():
            teacher_steps = torch.randint(1, self.teacher_steps + 1, t.shape, device=t.device)  # (B,) m
            t_end = (t - teacher_steps * self.skip).clamp_min(0)
            previous = self.teacher_solve(noisy, t, t_end, teacher_cond)
            target, _ = self.consistency(self.target_unet, previous, t_end, global_cond.detach())

        error = predicted - target  # (B, T, Da)
        consistency = (
            ((error.pow(2) + self.huber_c**2).sqrt() - self.huber_c) if self.huber_c else error.pow(2)
        )
        consistency_loss = student.mean_over_actions(consistency, batch)
        denoising_target = noise if student.config.prediction_type == "epsilon" else actions
        dsm_loss = student.mean_over_actions(F.mse_loss(output, denoising_target, reduction="none"), batch)
        loss = consistency_loss + self.dsm_weight * dsm_loss
        return {"loss": loss, "consistency_loss": consistency_loss.detach(), "dsm_loss": dsm_loss.detach()}

    def teacher_solve(self, sample: Tensor, t: Tensor, t_end: Tensor, cond: Tensor) -> Tensor:
        """DDIM (eta 0) steps of the teacher, `skip` apart, from x_t at t down to t_end, per row: (B, T, Da)."""
        while bool((t > t_end).any()):
            stepping = (t > t_end).view(-1, 1, 1)
            clean, noise = self.clean_and_noise(self.teacher, self.teacher.unet(sample, t, cond), sample, t)
            t_next = torch.maximum(t - self.skip, t_end)
            a_next = self.alpha(t_next)
            sample = torch.where(stepping, a_next.sqrt() * clean + (1 - a_next).sqrt() * noise, sample)
            t = t_next
        return sample

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- decay * target + (1 - decay) * student, before each step (so after each optimizer step)."""
        for target, current in zip(
            self.target_unet.parameters(), self.student.unet.parameters(), strict=True
        ):
            target.lerp_(current, 1 - self.target_decay)

    def consistency(self, unet: nn.Module, sample: Tensor, t: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """f(x, t) = c_skip(t) x + c_out(t) a_hat(x, t), and the network's raw output."""
        output = unet(sample, t, cond)
        clean, _ = self.clean_and_noise(self.student, output, sample, t)
        scheduler = self.student.noise_scheduler
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t.float())
        return c_skip.view(-1, 1, 1) * sample + c_out.view(-1, 1, 1) * clean, output

    def clean_and_noise(
        self, policy: DiffusionPolicy, output: Tensor, sample: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`policy`'s network output as (clean actions estimate, noise estimate), clipped as its sampler clips."""
        config = policy.config
        a_t = self.alpha(t)
        if config.prediction_type == "epsilon":
            clean = (sample - (1 - a_t).sqrt() * output) / a_t.sqrt()
        else:
            clean = output
        if config.clip_sample:
            clean = clean.clamp(-config.clip_sample_range, config.clip_sample_range)
        noise = (sample - a_t.sqrt() * clean) / (1 - a_t).sqrt()
        return clean, noise

    def alpha(self, t: Tensor) -> Tensor:
        return self.alphas_cumprod[t].view(-1, 1, 1)  # (B, 1, 1)
