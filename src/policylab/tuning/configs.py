"""`policylab tune` configuration. Every flag not listed here is a `policylab train` flag for all trials."""

from __future__ import annotations

from dataclasses import dataclass, field

from policylab.envs import EnvConfig, PushTEnvConfig

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
# The objective is one of eval_info.json's aggregated metrics, with the direction that makes it better.
OBJECTIVES = {
    "success_rate": "maximize",
    "avg_max_reward": "maximize",
    "avg_reward": "maximize",
    "path_efficiency": "maximize",
    "avg_steps": "minimize",
}
TUNE_PREFIXES = ("--tune.", "--eval.", "--env.", "--output_dir=")


@dataclass
class TuneSettings:
    """The search.

    n_trials: trials the study runs in all (finished, pruned or failed on a bad config), counting those of
        earlier runs of the same study: rerunning the command resumes it.
    space: JSON object {"flag.name": spec}: a spec is a list of choices, or {"low": L, "high": H} with
        optional "log": true or "step": S (integers when L and H are integers). Default: the policy's space.
    objective: eval metric to optimize: success_rate, avg_max_reward (max coverage), avg_reward,
        path_efficiency (all maximized) or avg_steps (minimized).
    sampler: tpe (default), random, or grid (every parameter a list; the grid's size bounds n_trials).
    pruner: median (stop a trial whose intermediate result is below the median of earlier trials at the same
        step) or none.
    n_evaluations: evaluations per trial, evenly spaced, the last at the end; the ones before feed the pruner.
    prune_after_trials: the pruner waits until this many trials have finished.
    n_workers: worker processes on this machine sharing the study (CPU threads are split between them).
    worker_id: 0 runs the study and writes the report; k > 0 only runs trials (what n_workers starts; give
        distinct ids to workers on other machines pointed at the same --tune.storage).
    storage: Optuna storage URL (default sqlite:///<output_dir>/study.db), e.g. postgresql://user@host/db to
        share one study between machines.
    study_name: name of the study inside the storage.
    heartbeat_seconds: a running trial writes a heartbeat this often; one silent for twice as long (its
        process was killed) is marked failed and rerun once with the same parameters.
    """

    n_trials: int = 20
    space: str | None = None
    objective: str = "success_rate"
    sampler: str = "tpe"
    pruner: str = "median"
    n_evaluations: int = 2
    prune_after_trials: int = 3
    n_workers: int = 1
    worker_id: int = 0
    storage: str | None = None
    study_name: str = "policylab"
    heartbeat_seconds: int = 60


@dataclass
class TuneEvalSettings:
    """How each trial is measured: episodes from the same held-out seeds for every trial.

    n_episodes: episodes per evaluation.
    batch_size: environments stepped together.
    """

    n_episodes: int = 20
    batch_size: int = 10


@dataclass
class TuneConfig:
    """policylab tune: search training settings with Optuna; each trial trains and evaluates a policy.

    Every flag not listed here (--policy.*, --dataset.*, --training.*, --config_path, --seed, --device) is a
    `policylab train` flag shared by all trials; --training.steps is required.

    output_dir: the study's folder: study.db, trials/<number>/ (each a training run), tune_results.csv,
        tune_results.md, best_train_command.txt and the plots (default outputs/tune/<study_name>).
    """

    tune: TuneSettings = field(default_factory=TuneSettings)
    env: EnvConfig = field(default_factory=PushTEnvConfig)
    eval: TuneEvalSettings = field(default_factory=TuneEvalSettings)
    output_dir: str | None = None

    def __post_init__(self):
        t = self.tune
        if t.objective not in OBJECTIVES:
            raise ValueError(f"--tune.objective={t.objective}: expected one of {', '.join(OBJECTIVES)}")
        if t.sampler not in SAMPLERS:
            raise ValueError(f"--tune.sampler={t.sampler}: expected one of {', '.join(SAMPLERS)}")
        if t.pruner not in PRUNERS:
            raise ValueError(f"--tune.pruner={t.pruner}: expected one of {', '.join(PRUNERS)}")
        for name in ("n_trials", "n_evaluations", "n_workers", "heartbeat_seconds"):
            if getattr(t, name) < 1:
                raise ValueError(f"--tune.{name} must be at least 1, got {getattr(t, name)}")
        for name in ("n_episodes", "batch_size"):
            if getattr(self.eval, name) < 1:
                raise ValueError(f"--eval.{name} must be at least 1, got {getattr(self.eval, name)}")

    @property
    def folder(self) -> str:
        return self.output_dir or f"outputs/tune/{self.tune.study_name}"

    @property
    def storage_url(self) -> str:
        return self.tune.storage or f"sqlite:///{self.folder}/study.db"
