"""`policylab tune`: an Optuna study whose trials train with the engine and measure with the evaluation code.

The study lives in an Optuna storage (SQLite next to the output by default), so rerunning the command
resumes it, and several processes (`--tune.n_workers`, or other machines on one `--tune.storage` URL) draw
trials from it at once. A trial is `policylab train` with the shared flags plus the sampled ones, written
to trials/<number>/, evaluated `--tune.n_evaluations` times on the same held-out seeds; the evaluations
before the last feed the pruner, the last is the trial's value.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from policylab.constants import HELD_OUT_SEED
from policylab.errors import ConfigError, FlagError, PolicylabError, did_you_mean
from policylab.evaluation.rollout import evaluate_policy
from policylab.flags import all_flag_names, parse_flags
from policylab.policies import PreTrainedPolicy
from policylab.runs import checked_output_dir
from policylab.training import TrainConfig
from policylab.training import train as run_training
from policylab.tuning.configs import OBJECTIVES, TuneConfig
from policylab.tuning.space import as_flag, grid, parse_space, representative_values, suggest

ERROR_ATTR = "error"  # a trial that failed on its own settings (not a killed process) carries this


class TrialFailed(Exception):
    """A trial's sampled settings could not train (bad combination, non-finite loss): recorded, study goes on."""


def run_tune(config: TuneConfig, tune_args: list[str], train_args: list[str]) -> optuna.Study:
    """Run this process's share of the study (starting the other local workers when worker_id is 0).

    tune_args, train_args: the command line split into tune flags and the train flags every trial shares.
    """
    base = parse_flags(TrainConfig, train_args, "policylab tune")
    if base.training.steps is None:
        raise ConfigError("policylab tune needs --training.steps (or a --config_path preset that sets it)")
    if base.resume:
        raise ConfigError("--resume is not a tune flag: rerunning the same tune command resumes the study")
    space = parse_space(config.tune.space, base.policy.type)
    check_space_names(space, train_args)
    checked_output_dir(config.folder).mkdir(parents=True, exist_ok=True)
    study = open_study(config, space, sampler_seed=base.seed + config.tune.worker_id)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.tune.n_workers))
    workers = start_local_workers(config, tune_args, train_args) if config.tune.worker_id == 0 else []
    try:
        run_trials(study, config, train_args, space, base.training.steps)
    finally:
        for worker in workers:
            worker.wait()
    return study


def check_space_names(space: dict, train_args: list[str]) -> None:
    """Every parameter must be a train flag, and a value from its spec must parse with the shared flags."""
    valid = all_flag_names(TrainConfig)
    for name in space:
        if name not in valid:
            raise ConfigError(
                f"--tune.space: parameter '{name}' is not a `policylab train` flag; {did_you_mean(name, valid)}"
                "see policylab train --help"
            )
    for name, value in representative_values(space).items():
        try:
            parse_flags(TrainConfig, [*train_args, as_flag(name, value)], "policylab tune")
        except FlagError as error:
            raise ConfigError(
                f"--tune.space: parameter '{name}' = {value!r} does not work: {error.message}"
            ) from None


def open_study(config: TuneConfig, space: dict, sampler_seed: int) -> optuna.Study:
    """Create the study, or load it to resume; a killed trial (silent heartbeat) is retried once."""
    t = config.tune
    url = config.storage_url
    engine = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    )  # workers wait for the lock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=t.heartbeat_seconds,
            grace_period=2 * t.heartbeat_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=sampler_seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=sampler_seed),
        "grid": lambda: optuna.samplers.GridSampler(grid(space), seed=sampler_seed),
    }
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=t.prune_after_trials)
        if t.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            storage=storage,
            study_name=t.study_name,
            sampler=samplers[t.sampler](),
            pruner=pruner,
            direction=OBJECTIVES[t.objective],
            load_if_exists=True,
        )
    except ValueError as error:  # e.g. the stored study optimizes in the other direction
        raise ConfigError(f"--tune.study_name={t.study_name} in {url}: {error}") from None


def start_local_workers(
    config: TuneConfig, tune_args: list[str], train_args: list[str]
) -> list[subprocess.Popen]:
    """Worker processes 1 .. n_workers-1 running the same command on the same study."""
    shared = [
        a for a in tune_args if not a.startswith(("--tune.worker_id=", "--tune.storage=", "--output_dir="))
    ]
    shared += [f"--output_dir={config.folder}", f"--tune.storage={config.storage_url}"]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "policylab.cli", "tune", *shared, f"--tune.worker_id={k}", *train_args]
        )
        for k in range(1, config.tune.n_workers)
    ]


def trials_counted(study: optuna.Study) -> int:
    """Trials that use up --tune.n_trials: finished, pruned, failed on their settings, running or queued.
    A trial whose process was killed does not count: its retry (queued) does."""
    counting = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(
        t.state in counting or (t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


def run_trials(
    study: optuna.Study, config: TuneConfig, train_args: list[str], space: dict, steps: int
) -> None:
    def objective(trial: optuna.Trial) -> float:
        return run_trial(trial, config, train_args, space, steps)

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # marks killed trials failed and queues their retry
        if trials_counted(study) >= config.tune.n_trials:
            return
        if config.tune.sampler == "grid" and study.sampler.is_exhausted(study):
            return
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        print(summary_line(study, config.tune.objective, config.tune.n_trials), file=sys.stderr, flush=True)


def run_trial(
    trial: optuna.Trial, config: TuneConfig, train_args: list[str], space: dict, steps: int
) -> float:
    """Train with the sampled settings, evaluating n_evaluations times; returns the last evaluation's value."""
    flags = [as_flag(name, value) for name, value in suggest(trial, space).items()]
    trial_dir = Path(config.folder) / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("flags", flags)
    trial.set_user_attr("output_dir", str(trial_dir))
    trial.set_user_attr("worker", config.tune.worker_id)
    print(f"policylab tune: trial {trial.number}: {' '.join(flags)}", file=sys.stderr, flush=True)
    try:
        train_config = parse_flags(
            TrainConfig, [*train_args, *flags, f"--output_dir={trial_dir}"], "policylab tune"
        )
    except FlagError as error:
        raise _failed(trial, error.message) from None
    eval_every = math.ceil(steps / config.tune.n_evaluations)
    train_config.training.eval_freq = eval_every
    evaluations: list[float] = []

    def evaluate(policy: PreTrainedPolicy) -> dict:
        results = measure(policy, config)
        evaluations.append(results[config.tune.objective])
        step = min(eval_every * len(evaluations), steps)
        trial.report(results[config.tune.objective], step)
        if step < steps and trial.should_prune():
            raise optuna.TrialPruned(
                f"{config.tune.objective} {results[config.tune.objective]:.3g} at step {step}"
            )
        if step == steps:
            trial.set_user_attr("eval", results)
        return results

    try:
        run_training(train_config, evaluate)
    except (PolicylabError, ValueError) as error:  # TrainingError, a config that cannot train, ...
        raise _failed(trial, str(error)) from None
    if len(evaluations) * eval_every < steps:  # the last evaluation came before the end (or --max_minutes)
        policy = PreTrainedPolicy.from_pretrained(trial_dir / "checkpoints/last")
        results = measure(policy, config)
        trial.set_user_attr("eval", results)
        evaluations.append(results[config.tune.objective])
    return evaluations[-1]


def measure(policy: PreTrainedPolicy, config: TuneConfig) -> dict:
    """The numeric aggregate metrics of one evaluation on the study's fixed held-out seeds."""
    results = evaluate_policy(
        policy, config.env, n_episodes=config.eval.n_episodes, max_steps=config.env.max_episode_steps, seed=HELD_OUT_SEED,
        batch_size=config.eval.batch_size, progress=False,
    )  # fmt: skip
    return {k: v for k, v in results.items() if isinstance(v, (int, float))}


def _failed(trial: optuna.Trial, message: str) -> TrialFailed:
    trial.set_user_attr(ERROR_ATTR, message)
    print(f"policylab tune: trial {trial.number} failed: {message}", file=sys.stderr, flush=True)
    return TrialFailed(message)


def summary_line(study: optuna.Study, objective: str, n_trials: int) -> str:
    """One line on where the study stands, printed after each of this process's trials."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    best_text = (
        f"best {objective} {best.value:.4g} (trial {best.number})" if best else "no finished trial yet"
    )
    return f"policylab tune: {done}/{n_trials} trials done; {best_text}; " + json.dumps(
        {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    )
