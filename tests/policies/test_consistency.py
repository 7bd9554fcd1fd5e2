"""Consistency distillation: the loss, the LCM student's sampling, its checkpoint."""

import dataclasses

import pytest
import torch

from helpers import fit
from policies.test_diffusion import observation, stats_for, tiny_config
from policylab.policies import PreTrainedPolicy
from policylab.policies.diffusion import DiffusionConfig, DiffusionPolicy
from policylab.policies.diffusion.consistency import ConsistencyDistillation


def training_batch(config, batch_size=16, seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    batch = {k: torch.rand(batch_size, 2, *s, generator=generator) for k, s in config.input_shapes.items()}
    for key in config.input_shapes:
        batch[key + "_is_pad"] = torch.zeros(batch_size, 2, dtype=torch.bool)
    steps = torch.linspace(0, 1, config.horizon)
    batch["action"] = (
        torch.stack([steps, steps**2], dim=-1).expand(batch_size, -1, -1)
        * batch["observation.state"][:, -1:, :]
    )  # actions that depend on the observation
    batch["action_is_pad"] = torch.zeros(batch_size, config.horizon, dtype=torch.bool)
    return batch


def student_of(teacher: DiffusionPolicy, steps: int = 1) -> DiffusionPolicy:
    config = dataclasses.replace(teacher.config, noise_scheduler_type="LCM", num_inference_steps=steps, prediction_type="sample",
                                 original_inference_steps=10)  # fmt: skip
    student = DiffusionPolicy(config, dataset_stats=stats_for(config))
    student.load_state_dict(teacher.state_dict())
    return student


@pytest.fixture(scope="module")
def teacher() -> DiffusionPolicy:
    torch.manual_seed(0)
    config = tiny_config(num_train_timesteps=100)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    fit(policy, training_batch(config), steps=150, lr=3e-3)
    return policy.requires_grad_(False)


def test_the_distillation_loss_falls_on_a_tiny_teacher(teacher):
    torch.manual_seed(1)
    student = student_of(teacher)
    objective = ConsistencyDistillation(student, teacher, dsm_weight=0.0, huber_c=0.0, target_decay=0.95)
    batch = training_batch(student.config)
    losses = fit(objective, batch, steps=150, lr=1e-3, record="consistency_loss")
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher is never trained


def test_the_student_samples_in_1_and_3_steps_and_round_trips(teacher, tmp_path):
    student = student_of(teacher)
    student.save_pretrained(tmp_path / "student")
    obs = observation(student.config)
    for steps in (1, 3):
        loaded = PreTrainedPolicy.from_pretrained(tmp_path / "student", num_inference_steps=steps)
        calls = []
        loaded.unet.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        actions = loaded.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
        assert len(calls) == steps and actions.shape == (2, 16, 2) and torch.isfinite(actions).all()
        assert type(loaded.noise_scheduler).__name__ == "LCMScheduler"
    again = PreTrainedPolicy.from_pretrained(tmp_path / "student")
    first = student.predict_action_chunk(obs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again.predict_action_chunk(obs, generator=torch.Generator().manual_seed(5)))


def test_one_consistency_step_of_a_distilled_student_lands_near_the_teachers_ddpm_chain(teacher):
    torch.manual_seed(2)
    student = student_of(teacher)
    objective = ConsistencyDistillation(student, teacher, dsm_weight=1.0, huber_c=0.001, target_decay=0.95)
    fit(objective, training_batch(student.config), steps=300, lr=1e-3)
    obs = {k: v[:4] for k, v in training_batch(student.config, seed=0).items() if not k.endswith("_is_pad")}
    obs.pop("action")
    reference = teacher.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))  # DDPM-100
    distilled = student.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))  # LCM-1
    undistilled = student_of(teacher).predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    error = (distilled - reference).abs().mean()
    assert error < 0.5 * (undistilled - reference).abs().mean()  # distillation taught the one-step jump


def test_the_teacher_solves_each_row_down_to_its_own_level_in_ddim_steps(teacher):
    student = student_of(teacher)
    objective = ConsistencyDistillation(student, teacher, 0.0, 0.0, 0.95, teacher_steps=10)
    config = teacher.config
    assert config.prediction_type == "epsilon" and config.clip_sample
    torch.manual_seed(3)
    sample = torch.randn(4, config.horizon, 2)
    cond = torch.randn(4, teacher.observation_encoder.output_dim)
    t, t_end = torch.tensor([99, 99, 49, 9]), torch.tensor([0, 59, 19, 0])
    solved = objective.teacher_solve(sample, t, t_end, cond)

    alphas = teacher.noise_scheduler.alphas_cumprod
    for row in range(4):  # by hand: one DDIM step (eta 0) at a time, 10 training steps apart
        x, level = sample[row : row + 1], int(t[row])
        while level > t_end[row]:
            following = max(level - 10, int(t_end[row]))
            a = alphas[level]
            predicted_noise = teacher.unet(
                x, torch.tensor([level]), cond[row : row + 1]
            )  # an epsilon teacher
            clean = ((x - (1 - a).sqrt() * predicted_noise) / a.sqrt()).clamp(-1, 1)
            noise = (x - a.sqrt() * clean) / (1 - a).sqrt()  # the noise that the clipped estimate implies
            x = alphas[following].sqrt() * clean + (1 - alphas[following]).sqrt() * noise
            level = following
        torch.testing.assert_close(solved[row : row + 1], x)


def test_teacher_steps_must_fit_the_levels(teacher):
    with pytest.raises(ValueError, match="teacher_steps=11 must be in 1..original_inference_steps=10"):
        ConsistencyDistillation(student_of(teacher), teacher, 0.0, 0.0, 0.95, teacher_steps=11)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(noise_scheduler_type="LCM", num_inference_steps=12, original_inference_steps=10), "at most"),
        (dict(num_train_timesteps=100, original_inference_steps=30), "must divide"),
    ],
)
def test_lcm_settings_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        DiffusionConfig(input_shapes={"observation.state": [2]}, output_shapes={"action": [2]}, **fields)
