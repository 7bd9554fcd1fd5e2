"""`policylab study` configuration: the ACT-vs-Diffusion matrix, its budget, and what is measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from policylab.constants import HELD_OUT_SEED
from policylab.evaluation.benchmark import BenchSettings

POLICIES = ("act", "diffusion")
DEMONSTRATIONS = {"consistent": 0.0, "diverse": 1.0}  # --expert.diversity of each kind of demonstrations


@dataclass
class StudySettings:
    """The matrix and its budget.

    policies: the policies compared (act, diffusion), each trained with its preset.
    demonstrations: the kinds of demonstrations each is trained on: consistent (the deterministic expert,
        --expert.diversity=0) and diverse (the default expert, --expert.diversity=1), datasets of the same size.
    minutes_per_run: the training budget of every run, in minutes of the training loop: each policy's steps are
        set from its training rate, timed on a few steps first, so that its schedule ends within the budget.
    steps_per_run: a fixed number of steps per run instead (tests, GPUs); overrides minutes_per_run.
    n_seeds: training seeds per cell (seed, seed + 1, ...).
    n_checkpoints: checkpoints kept and evaluated along each run (the learning curves).
    act_preset, diffusion_preset: `policylab train --config_path` presets of the two policies.
    student: a consistency student (`policylab distill`) to add to the inference-speed row.
    amp: policies trained with bfloat16 mixed precision (--training.amp=true) where the device computes it
        natively (a GPU, or a CPU with AVX512-BF16 or AMX); float32 elsewhere and for the others. ACT's step is
        ~1.9x faster so on this project's CPU; Diffusion's keypoint preset gained nothing.
    """

    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    demonstrations: list[str] = field(default_factory=lambda: list(DEMONSTRATIONS))
    minutes_per_run: float = 15.0
    steps_per_run: int | None = None
    n_seeds: int = 1
    n_checkpoints: int = 5
    act_preset: str = "configs/train/act_pusht_keypoints_30min_cpu.json"
    diffusion_preset: str = "configs/train/diffusion_pusht_keypoints_cpu.json"
    student: str | None = None
    amp: list[str] = field(default_factory=lambda: ["act"])

    def preset(self, policy: str) -> str:
        return {"act": self.act_preset, "diffusion": self.diffusion_preset}[policy]


@dataclass
class StudyDatasetConfig:
    """The demonstrations, recorded once per kind into <output_dir>/data/<kind>.

    num_episodes: episodes per dataset (the same for every kind).
    seed: attempt k of each recording resets the env with seed + k.
    """

    num_episodes: int = 400
    seed: int = 0


@dataclass
class StudyEvalSettings:
    """How every checkpoint is measured: the same held-out episodes for all of them.

    n_episodes: episodes per evaluation, episode i from seed + i.
    batch_size: environments stepped together.
    max_episode_steps: step limit of an episode.
    seed: first held-out seed.
    """

    n_episodes: int = 50
    batch_size: int = 25
    max_episode_steps: int = 300
    seed: int = HELD_OUT_SEED


@dataclass
class StudyTuneSettings:
    """The ease-of-tuning row: a small `policylab tune` study per policy, on the consistent demonstrations.

    n_trials: trials per policy (0: leave the row out).
    steps: training steps per trial.
    n_episodes: evaluation episodes per trial.
    objective: the trials' score (avg_max_reward, mean max coverage, separates trials that all fail).
    act_space, diffusion_space: the search spaces (JSON, as --tune.space).
    """

    n_trials: int = 6
    steps: int = 800
    n_episodes: int = 20
    objective: str = "avg_max_reward"
    act_space: str = (
        '{"training.lr": {"low": 1e-4, "high": 3e-3, "log": true}, "policy.chunk_size": [20, 50],'
        ' "policy.dim_model": [128, 256], "policy.dropout": [0.0, 0.1]}'
    )
    diffusion_space: str = (
        '{"training.lr": {"low": 1e-4, "high": 3e-3, "log": true}, "policy.down_dims": [[32,64,128],[64,128,256]],'
        ' "policy.horizon": [16, 32], "policy.n_action_steps": [4, 8]}'
    )

    def space(self, policy: str) -> str:
        return {"act": self.act_space, "diffusion": self.diffusion_space}[policy]


@dataclass
class ProbeSettings:
    """The multi-modality probe (`study/probe.py`), on the policies trained on diverse demonstrations.

    n_states: start states probed (env seeds from seed).
    n_demos: expert demonstrations drawn from each start state (the expert's own seed varies).
    n_samples: action chunks each policy predicts from the start observation, and rollouts per state.
    horizon: actions compared (the first steps of each chunk; fewer when a probed policy predicts fewer).
    radius_px: two chunks within this mean distance (px) are the same mode; a chunk farther than this from
        every demonstrated mode is off the demonstrations.
    seed: env seed of the first start state.
    """

    n_states: int = 8
    n_demos: int = 16
    n_samples: int = 16
    horizon: int = 16
    radius_px: float = 30.0
    seed: int = 300_000


@dataclass
class StudyConfig:
    """policylab study: ACT and Diffusion Policy, each trained on consistent and on diverse demonstrations with
    the same budget, measured cell by cell; writes study.md, study.html and study.json. Rerunning resumes it.

    output_dir: the study's folder (data/, runs/, measurements/, the report).
    seed: the first training seed.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    study: StudySettings = field(default_factory=StudySettings)
    dataset: StudyDatasetConfig = field(default_factory=StudyDatasetConfig)
    eval: StudyEvalSettings = field(default_factory=StudyEvalSettings)
    tune: StudyTuneSettings = field(default_factory=StudyTuneSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    output_dir: str = "outputs/study"
    seed: int = 1000
    device: str | None = None

    def __post_init__(self):
        s = self.study
        for name in s.policies:
            if name not in POLICIES:
                raise ValueError(f"--study.policies: '{name}' is not one of {', '.join(POLICIES)}")
        for name in s.demonstrations:
            if name not in DEMONSTRATIONS:
                raise ValueError(
                    f"--study.demonstrations: '{name}' is not one of {', '.join(DEMONSTRATIONS)}"
                )
        checks = {
            "--study.minutes_per_run": (s.minutes_per_run > 0, "positive"),
            "--study.n_seeds": (s.n_seeds >= 1, "at least 1"),
            "--study.n_checkpoints": (s.n_checkpoints >= 1, "at least 1"),
            "--study.steps_per_run": (s.steps_per_run is None or s.steps_per_run >= s.n_checkpoints,
                                      "at least --study.n_checkpoints"),
            "--dataset.num_episodes": (self.dataset.num_episodes >= 1, "at least 1"),
            "--eval.n_episodes": (self.eval.n_episodes >= 1, "at least 1"),
            "--tune.n_trials": (self.tune.n_trials >= 0, "0 (no tuning row) or more"),
            "--probe.n_states": (self.probe.n_states >= 1, "at least 1"),
            "--probe.n_demos": (self.probe.n_demos >= 2, "at least 2"),
            "--probe.n_samples": (self.probe.n_samples >= 2, "at least 2"),
        }  # fmt: skip
        for flag, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{flag} must be {expected}")
