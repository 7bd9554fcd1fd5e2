"""`policylab distill`: train a consistency student of a trained Diffusion Policy with the training engine.

The student is a `diffusion` policy that starts from the teacher's weights, or from those of another
diffusion policy trained on the same data (--student.path: e.g. a UNet with fewer blocks; at batch 1 on a CPU
a call costs per layer, not per multiply, so fewer layers is what makes one step fast; the teacher without its
middle blocks, fine-tuned with `policylab train --init_from=TEACHER --policy.n_mid_res_blocks=0`, is the
measured choice), sampling
with noise_scheduler_type=LCM and predicting actions directly (prediction_type=sample: from the cosine
schedule's last noise level, sqrt(alpha_bar) ~ 0.003, an action estimate derived from a noise prediction
magnifies its error some 300 times); it is trained with `ConsistencyDistillation` on the teacher's dataset and
saved like any checkpoint, so eval, bench, plot and compare take it as they take the teacher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from policylab.datasets import DatasetConfig
from policylab.errors import ConfigError
from policylab.policies.diffusion import DiffusionPolicy
from policylab.policies.diffusion.consistency import ConsistencyDistillation, check_teacher_steps
from policylab.runs import Checkpoint, checked_output_dir, default_output_dir
from policylab.training.checkpoints import save_command_config
from policylab.training.configs import TrainConfig, TrainingConfig
from policylab.training.trainer import train
from policylab.utils.device import select_device

DISTILL_CONFIG = "distill_config.json"


@dataclass
class TeacherConfig:
    """The trained Diffusion Policy to distill.

    path: its training run folder (newest checkpoint), a checkpoint folder or a pretrained_model folder; the
        weights saved there (the EMA weights when training kept an EMA) are the teacher.
    """

    path: str | None = None


@dataclass
class StudentConfig:
    """The network the student starts from.

    path: a trained `diffusion` policy (run folder or checkpoint) whose network sizes and weights the student
        takes, e.g. the teacher without its middle blocks, fine-tuned on the teacher's data by `policylab train
        --init_from=TEACHER --policy.n_mid_res_blocks=0`. It must
        act like the teacher (same inputs, actions, horizon, observation steps and noise schedule). Default:
        the teacher itself.
    """

    path: str | None = None


# what a starting network must share with the teacher: the task and the noise levels the distillation maps
SHARED_WITH_TEACHER = (
    "input_shapes", "output_shapes", "n_obs_steps", "horizon", "num_train_timesteps", "beta_schedule",
    "beta_start", "beta_end", "clip_sample", "clip_sample_range",
)  # fmt: skip


@dataclass
class DistillSettings:
    """The consistency distillation.

    original_inference_steps: N noise levels of the teacher's schedule the student learns to map straight to
        actions; the teacher steps (DDIM) between neighbouring levels, num_train_timesteps / N apart.
    inference_steps: consistency steps the student samples with, saved in its config (1 to N; change it at
        eval time with --policy.num_inference_steps).
    dsm_weight: weight of the student's own denoising loss (its action estimate against the demonstrated
        actions) next to the consistency loss (Consistency Policy's regularizer); 0 (the default) turns it off.
    huber_c: constant of the pseudo-Huber consistency loss (0: squared error).
    target_decay: EMA decay of the target network the consistency loss compares with.
    teacher_steps: at most this many teacher steps before the target network takes over (each target draws
        1..teacher_steps). 1 is LCM's single step between neighbouring levels; more lets the teacher solve
        more of the way, so targets lean less on the student's own estimates. Default: N, the whole way.
    The defaults, with the training's lr 3e-4 and 200 warm-up steps, are the recipe of docs/distillation.md.
    """

    original_inference_steps: int = 10
    inference_steps: int = 1
    dsm_weight: float = 0.0
    huber_c: float = 0.001
    target_decay: float = 0.95
    teacher_steps: int | None = None


@dataclass
class DistillTrainingConfig(TrainingConfig):
    """How to optimize the student, as for `policylab train`: by default 2,000 steps at batch 64, lr 3e-4 after
    200 warm-up steps (docs/distillation.md); the Diffusion preset fills the unset ones."""

    steps: int | None = 2000
    batch_size: int = 64
    lr: float | None = 3e-4
    warmup_steps: int | None = 200


@dataclass
class DistillConfig:
    """policylab distill: distill a trained Diffusion Policy into a 1-to-few-step consistency student.

    dataset: default the dataset the teacher was trained on.
    training: the engine's settings, as for `policylab train` (the Diffusion preset fills the unset ones).
    output_dir: where the student's checkpoints, metrics.jsonl and distill_config.json go (default
        outputs/distill/<time>_diffusion).
    resume: continue the distillation in output_dir from its last checkpoint (its saved settings are used).
    seed: seeds the data order and noise.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    training: DistillTrainingConfig = field(default_factory=DistillTrainingConfig)
    output_dir: str | None = None
    resume: bool = False
    seed: int = 1000
    device: str | None = None


def run_distill(config: DistillConfig) -> Path:
    """Distill `config.teacher.path` into a student written to `config.output_dir`; returns that folder."""
    device = select_device(config.device)
    teacher_checkpoint = Checkpoint.resolve(config.teacher.path, "--teacher.path")
    teacher = trained_diffusion_policy("teacher", teacher_checkpoint, device)
    start = starting_network(config.student.path, teacher, device)
    settings = config.distill
    try:
        student_config = dataclasses.replace(
            start.config,
            noise_scheduler_type="LCM",
            prediction_type="sample",
            num_inference_steps=settings.inference_steps,
            original_inference_steps=settings.original_inference_steps,
        )
        check_teacher_steps(settings.teacher_steps, settings.original_inference_steps)
    except ValueError as error:
        raise ConfigError(f"--distill.*: {error}") from None
    root = teacher_checkpoint.dataset_root(config.dataset, "distill")
    output_dir = checked_output_dir(config.output_dir or default_output_dir("distill", "diffusion"))
    train_config = TrainConfig(
        dataset=DatasetConfig(root=str(root), episodes=config.dataset.episodes),
        policy=student_config,
        training=config.training,
        output_dir=str(output_dir),
        resume=config.resume,
        seed=config.seed,
        device=config.device,
    )
    save_command_config(output_dir, config, DISTILL_CONFIG)

    def objective(student: DiffusionPolicy) -> ConsistencyDistillation:
        return ConsistencyDistillation(
            student,
            teacher,
            settings.dsm_weight,
            settings.huber_c,
            settings.target_decay,
            settings.teacher_steps,
        )

    return train(train_config, objective=objective, initial_weights=start.state_dict())


def trained_diffusion_policy(flag: str, checkpoint: Checkpoint, device) -> DiffusionPolicy:
    """The DDPM or DDIM diffusion policy of --<flag>.path; a clear error for any other."""
    path = checkpoint.path
    if checkpoint.config.type != "diffusion":
        raise ConfigError(
            f"--{flag}.path={path} is an {checkpoint.config.type!r} policy; distill takes a diffusion one"
        )
    if checkpoint.config.noise_scheduler_type == "LCM":
        raise ConfigError(f"--{flag}.path={path} is already a consistency student; give its teacher")
    return checkpoint.load(device)


def starting_network(path: str | None, teacher: DiffusionPolicy, device) -> DiffusionPolicy:
    """The policy at --student.path, checked against the teacher; the teacher itself without a path."""
    if path is None:
        return teacher
    start = trained_diffusion_policy("student", Checkpoint.resolve(path, "--student.path"), device)
    for name in SHARED_WITH_TEACHER:
        if getattr(start.config, name) != getattr(teacher.config, name):
            raise ConfigError(
                f"--student.path={path} has {name}={getattr(start.config, name)!r} and the teacher "
                f"{getattr(teacher.config, name)!r}: a student must act like its teacher"
            )
    return start
