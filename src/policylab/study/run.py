"""`policylab study`: every cell of the ACT-vs-Diffusion table, measured, in stages that each keep their results.

    data       one dataset per kind of demonstrations (consistent, diverse), of the same size
    calibrate  each policy's training rate on a few steps, so every run's schedule fits the same budget
    train      policy x demonstrations x seed, each with `minutes_per_run` (or `steps_per_run`), checkpoints kept
    evaluate   every kept checkpoint on the same held-out episodes: the learning curves
    bench      batch-1 latency and memory of each policy's final checkpoint (and of a consistency student)
    probe      the multi-modality probe on the policies trained on diverse demonstrations
    tune       a small `policylab tune` study per policy: how much the score moves with its hyperparameters

Everything lands under `output_dir` (data/, runs/, tune/, measurements/); a stage finds what an earlier run of
the same study finished (same settings) and does not do it again, so an interrupted study resumes.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policylab.constants import CHECKPOINTS_DIR, METRICS_FILE, TRAIN_CONFIG, TRAINING_STATE_DIR
from policylab.envs import PushTEnvConfig
from policylab.errors import PolicylabError
from policylab.evaluation import evaluate_policy
from policylab.evaluation.benchmark import benchmark_policy, device_name
from policylab.experts import PushTExpertConfig
from policylab.experts.record import RecordConfig, RecordDatasetConfig, record_dataset
from policylab.flags import parse_flags
from policylab.policies import PreTrainedPolicy
from policylab.runs import Checkpoint, checked_output_dir
from policylab.study.configs import DEMONSTRATIONS, StudyConfig
from policylab.study.probe import ProbeState, demonstrations_from, modes, predicted_steps, probe_policy
from policylab.training import TrainConfig
from policylab.training import train as run_training
from policylab.tuning import TuneConfig, run_tune
from policylab.tuning.configs import TuneEvalSettings, TuneSettings
from policylab.utils.device import cpu_has_native_bfloat16, select_device
from policylab.utils.files import saved_with, write_json

KEYPOINTS = "environment_state_agent_pos"  # what the keypoint presets observe: no rendering, no video
CALIBRATION_STEPS = 30
PROBE_CANDIDATES = 5  # start states tried per probed state, to find ones where the demonstrations split


@dataclasses.dataclass(frozen=True)
class Cell:
    policy: str
    demonstrations: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.policy}_{self.demonstrations}_seed{self.seed}"


def run_study(config: StudyConfig) -> dict:
    """Run (or resume) every stage; returns the measurements (also in measurements/study.json)."""
    out = checked_output_dir(config.output_dir)
    device = select_device(config.device)
    started = time.perf_counter()
    datasets = {kind: record_demonstrations(config, kind, out) for kind in config.study.demonstrations}
    steps = {policy: run_length(config, policy, datasets, out) for policy in config.study.policies}
    cells = [
        Cell(policy, kind, config.seed + k)
        for policy in config.study.policies
        for kind in config.study.demonstrations
        for k in range(config.study.n_seeds)
    ]
    runs = {
        cell: train_cell(config, cell, steps[cell.policy], datasets, out) for cell in stage(cells, "train")
    }
    curves = evaluate_checkpoints(config, runs, out, device)
    finals = {policy: final_run(runs, policy, config) for policy in config.study.policies}
    speed = {
        policy: bench(config, Checkpoint.resolve(run), datasets, out, device)
        for policy, run in finals.items()
    }
    if config.study.student:
        speed["student"] = bench(config, Checkpoint.resolve(config.study.student), datasets, out, device)
    measurements = {
        "machine": device_name(device),
        "device": str(device),
        "budget": {
            "minutes_per_run": None if config.study.steps_per_run else config.study.minutes_per_run,
            "steps": steps,
        },  # fmt: skip
        "mixed_precision": {
            p: "--training.amp=true" in train_flags(config, p, Path(), Path()) for p in config.study.policies
        },
        "datasets": {kind: describe_dataset(root) for kind, root in datasets.items()},
        "runs": {cell.name: {**dataclasses.asdict(cell), **runs[cell]["facts"]} for cell in cells},
        "curves": curves,
        "speed": speed,
        "probe": probe(config, runs, out) if "diverse" in config.study.demonstrations else None,
        "tuning": {policy: tune(config, policy, datasets, out) for policy in config.study.policies}
        if config.tune.n_trials and "consistent" in datasets
        else None,
        "settings": json.loads(json.dumps(dataclasses.asdict(config))),
    }
    measurements["wall_minutes_this_session"] = round((time.perf_counter() - started) / 60, 1)
    write_json(out / "measurements/study.json", measurements)
    return measurements


def stage(items: list, name: str):
    return tqdm(items, desc=f"study: {name}", unit="run" if name == "train" else "item", position=0)


# -- data ---------------------------------------------------------------------------------------------------


def record_demonstrations(config: StudyConfig, kind: str, out: Path) -> Path:
    """The dataset of `kind` demonstrations (recorded, or resumed, into out/data/<kind>)."""
    root = out / "data" / kind
    record_dataset(
        RecordConfig(
            env=PushTEnvConfig(obs_type=KEYPOINTS),
            dataset=RecordDatasetConfig(root=str(root), num_episodes=config.dataset.num_episodes),
            expert=PushTExpertConfig(diversity=DEMONSTRATIONS[kind]),
            seed=config.dataset.seed,
        )
    )
    return root


def describe_dataset(root: Path) -> dict:
    recording = json.loads((root / "meta/recording.json").read_text())
    info = json.loads((root / "meta/info.json").read_text())
    return {"root": str(root), "episodes": info["total_episodes"], "frames": info["total_frames"],
            "expert_diversity": recording["expert"]["diversity"]}  # fmt: skip


# -- training -----------------------------------------------------------------------------------------------


def train_flags(config: StudyConfig, policy: str, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    amp = policy in config.study.amp and mixed_precision_pays(select_device(config.device))
    return [f"--config_path={config.study.preset(policy)}", f"--dataset.root={dataset}", f"--output_dir={output_dir}",
            f"--device={select_device(config.device).type}", f"--training.amp={str(amp).lower()}", *extra]  # fmt: skip


def mixed_precision_pays(device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())


def run_length(config: StudyConfig, policy: str, datasets: dict[str, Path], out: Path) -> int:
    """Steps per run of `policy`: `steps_per_run`, or what its measured training rate fits in the budget."""
    if config.study.steps_per_run is not None:
        return config.study.steps_per_run
    path = out / "measurements" / f"calibration_{policy}.json"
    settings = {"flags": train_flags(config, policy, Path(), Path()), "steps": CALIBRATION_STEPS}
    saved = saved_with(path, settings)
    if saved is None:
        run_dir = out / "calibration" / policy
        flags = train_flags(config, policy, next(iter(datasets.values())), run_dir,
                            f"--training.steps={CALIBRATION_STEPS}", "--training.log_freq=5",
                            f"--training.save_freq={CALIBRATION_STEPS}")  # fmt: skip
        if (run_dir / CHECKPOINTS_DIR).exists():
            flags.append("--resume=true")
        run_training(parse_flags(TrainConfig, flags, "policylab study"))
        records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
        samples_per_s = statistics.median(r["samples_per_s"] for r in records[1:] if "samples_per_s" in r)
        batch = json.loads((run_dir / TRAIN_CONFIG).read_text())["training"]["batch_size"]
        saved = {"settings": settings, "steps_per_s": samples_per_s / batch}
        write_json(path, saved)
    return max(config.study.n_checkpoints, int(saved["steps_per_s"] * 60 * config.study.minutes_per_run))


def train_cell(config: StudyConfig, cell: Cell, steps: int, datasets: dict[str, Path], out: Path) -> dict:
    """Train one cell in a process of its own, so its peak memory is its own (resuming it; a finished run is
    kept); returns its folder and facts."""
    run_dir = out / "runs" / cell.name
    facts_path = out / "measurements" / "runs" / f"{cell.name}.json"
    settings = {"steps": steps, "flags": train_flags(config, cell.policy, Path(), Path()), "seed": cell.seed}
    saved = saved_with(facts_path, settings)
    if saved is None:
        last_state = run_dir / CHECKPOINTS_DIR / "last" / TRAINING_STATE_DIR / "state.json"
        resume = last_state.exists()  # the budget counts the minutes trained before an interruption too
        spent = json.loads(last_state.read_text())["train_seconds"] / 60 if resume else 0.0
        flags = train_flags(config, cell.policy, datasets[cell.demonstrations], run_dir,
                            f"--training.steps={steps}", f"--training.save_freq={max(1, steps // config.study.n_checkpoints)}",
                            f"--training.max_minutes={max(0.01, config.study.minutes_per_run - spent)}",
                            f"--seed={cell.seed}", f"--resume={str(resume).lower()}")  # fmt: skip
        train_in_own_process(flags, cell.name)
        state = json.loads(last_state.read_text())
        records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
        peaks = [r["peak_memory_mb"] for r in records if r.get("peak_memory_mb") is not None]
        saved = {"settings": settings, "steps_done": state["step"], "train_minutes": round(state["train_seconds"] / 60, 2),
                 "train_peak_memory_mb": round(max(peaks), 1) if peaks else None,
                 "memory_kind": "cuda_allocated" if select_device(config.device).type == "cuda" else "process_rss"}  # fmt: skip
        write_json(facts_path, saved)
    return {"dir": run_dir, "facts": {k: v for k, v in saved.items() if k != "settings"}}


def train_in_own_process(flags: list[str], name: str) -> None:
    """`policylab train` with `flags` in a child process; its error message (already printed) stops the study."""
    parse_flags(TrainConfig, flags, "policylab study")  # a bad flag stops here, with the usual message
    done = subprocess.run([sys.executable, "-m", "policylab.cli", "train", *flags], check=False)
    if done.returncode == 130:
        raise KeyboardInterrupt
    if done.returncode != 0:
        raise PolicylabError(f"training {name} failed (exit status {done.returncode}; its error is above)")


def final_run(runs: dict, policy: str, config: StudyConfig) -> Path:
    """The run whose final checkpoint stands for `policy` in the speed and memory rows: the first seed's,
    on consistent demonstrations where they were recorded."""
    kind = "consistent" if "consistent" in config.study.demonstrations else config.study.demonstrations[0]
    return runs[Cell(policy, kind, config.seed)]["dir"]


# -- evaluation ---------------------------------------------------------------------------------------------


def evaluate_checkpoints(config: StudyConfig, runs: dict, out: Path, device) -> dict:
    """Run name -> one point per kept checkpoint: step, epoch, training minutes and the evaluation metrics."""
    todo = [(cell, path) for cell, run in runs.items() for path in checkpoints(run["dir"])]
    env = PushTEnvConfig(obs_type=KEYPOINTS, max_episode_steps=config.eval.max_episode_steps)
    settings = {**dataclasses.asdict(config.eval), "device": str(device)}
    curves: dict[str, list[dict]] = {cell.name: [] for cell in runs}
    for cell, path in stage(todo, "evaluate checkpoints"):
        cache = out / "measurements" / "evals" / cell.name / f"{path.name}.json"
        saved = saved_with(cache, settings)
        if saved is None:
            policy = PreTrainedPolicy.from_pretrained(path, device=device)
            metrics = evaluate_policy(
                policy, env, n_episodes=config.eval.n_episodes, max_steps=config.eval.max_episode_steps,
                seed=config.eval.seed, batch_size=config.eval.batch_size, device=device, progress=False,
            )  # fmt: skip
            saved = {
                "settings": settings,
                **point_of(path),
                **{k: v for k, v in metrics.items() if k != "per_episode"},
            }
            write_json(cache, saved)
        curves[cell.name].append(
            {k: v for k, v in saved.items() if k not in ("settings", "path_lengths", "video_paths")}
        )
    return curves


def checkpoints(run_dir: Path) -> list[Path]:
    steps = [p for p in (run_dir / CHECKPOINTS_DIR).iterdir() if p.name.isdigit()]
    return sorted(steps, key=lambda p: int(p.name))


def point_of(checkpoint: Path) -> dict:
    """Step, epoch and training minutes of a checkpoint (epochs from the run's logged step/epoch ratio)."""
    state = json.loads((checkpoint / TRAINING_STATE_DIR / "state.json").read_text())
    records = [json.loads(line) for line in (checkpoint.parents[1] / METRICS_FILE).read_text().splitlines()]
    logged = next(r for r in records if r.get("epoch"))
    return {"step": state["step"], "epoch": round(state["step"] * logged["epoch"] / logged["step"], 2),
            "minutes": round(state["train_seconds"] / 60, 2)}  # fmt: skip


# -- speed and memory ---------------------------------------------------------------------------------------


def bench(config: StudyConfig, checkpoint: Checkpoint, datasets: dict[str, Path], out: Path, device) -> dict:
    """Batch-1 latency per model call and per control step, parameters, checkpoint size, inference memory."""
    samplers = None
    if checkpoint.config.type == "diffusion":
        student = checkpoint.config.noise_scheduler_type == "LCM"
        samplers = ["LCM-1"] if student else [f"DDPM-{checkpoint.config.num_train_timesteps}", "DDIM-10"]
    settings = {"checkpoint": str(checkpoint.folder.resolve()), "device": str(device),
                **dataclasses.asdict(dataclasses.replace(config.bench, samplers=samplers))}  # fmt: skip
    cache = out / "measurements" / "bench" / f"{checkpoint.name}.json"
    saved = saved_with(cache, settings)
    if saved is None:
        root = checkpoint.dataset_root(dataset_config_of(checkpoint, datasets), "study")
        results = benchmark_policy(
            checkpoint, {}, root, dataclasses.replace(config.bench, samplers=samplers), device, 0
        )
        saved = {"settings": settings, **results,
                 "checkpoint_mb": (checkpoint.folder / "model.safetensors").stat().st_size / 2**20}  # fmt: skip
        write_json(cache, saved)
    return {k: v for k, v in saved.items() if k != "settings"}


def dataset_config_of(checkpoint: Checkpoint, datasets: dict[str, Path]):
    """The run's own dataset, or (for a checkpoint made elsewhere) the first of the study's."""
    from policylab.datasets import DatasetConfig

    return (
        DatasetConfig()
        if checkpoint.run is not None
        else DatasetConfig(root=str(next(iter(datasets.values()))))
    )


# -- multi-modality -----------------------------------------------------------------------------------------


def probe(config: StudyConfig, runs: dict, out: Path) -> dict:
    """The probe's statistics for each policy trained on diverse demonstrations (the first seed)."""
    p = config.probe
    settings = dataclasses.asdict(p)
    cache = out / "measurements" / "probe.json"
    saved = saved_with(cache, settings)
    if saved is not None:
        return {k: v for k, v in saved.items() if k != "settings"}
    policies = {
        policy: PreTrainedPolicy.from_pretrained(runs[Cell(policy, "diverse", config.seed)]["dir"])
        for policy in config.study.policies
    }
    horizon = min([p.horizon, *(predicted_steps(loaded) for loaded in policies.values())])
    states = probe_states(config, horizon)
    result = {"horizon": horizon,
              "states": [{"seed": s.seed, "demonstrated": s.demonstrated.round(2).tolist(),
                          "observation": {k: v.tolist() for k, v in s.observation.items()}} for s in states]}  # fmt: skip
    for policy in stage(config.study.policies, "multi-modality probe"):
        result[policy] = probe_policy(policies[policy], states, p.n_samples, horizon, p.radius_px)
    write_json(cache, {"settings": settings, **result})
    return result


def probe_states(config: StudyConfig, horizon: int) -> list[ProbeState]:
    """Up to `n_states` start states (from `seed` on) whose first `horizon` demonstrated actions split between
    two or more modes."""
    p, states = config.probe, []
    candidates = range(p.seed, p.seed + PROBE_CANDIDATES * p.n_states)
    for seed in tqdm(candidates, desc="study: probe states", unit="state", leave=False):
        state = demonstrations_from(seed, p.n_demos, horizon)
        if len(modes(state.demonstrated, p.radius_px)) >= 2:
            states.append(state)
        if len(states) == p.n_states:
            break
    return states


# -- tuning -------------------------------------------------------------------------------------------------


def tune(config: StudyConfig, policy: str, datasets: dict[str, Path], out: Path) -> dict:
    """A small Optuna study of `policy` on the consistent demonstrations: the spread of its trials' scores and
    the importance of each hyperparameter (fANOVA)."""
    import optuna
    from optuna.trial import TrialState

    t = config.tune
    folder = out / "tune" / policy
    tune_config = TuneConfig(
        tune=TuneSettings(n_trials=t.n_trials, space=t.space(policy), objective=t.objective, n_evaluations=1,
                          pruner="none", study_name=f"study_{policy}"),
        env=PushTEnvConfig(obs_type=KEYPOINTS, max_episode_steps=config.eval.max_episode_steps),
        eval=TuneEvalSettings(n_episodes=t.n_episodes, batch_size=config.eval.batch_size),
        output_dir=str(folder),
    )  # fmt: skip
    train_args = train_flags(config, policy, datasets["consistent"], folder / "unused", f"--training.steps={t.steps}",
                             f"--training.save_freq={t.steps}", f"--seed={config.seed}")  # fmt: skip
    train_args = [a for a in train_args if not a.startswith("--output_dir=")]
    study = run_tune(tune_config, [], train_args)
    values = sorted(
        trial.value for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE
    )
    result = {
        "objective": t.objective,
        "trials": t.n_trials,
        "steps_per_trial": t.steps,
        "completed": len(values),
    }
    if values:
        result.update(best=values[-1], median=float(np.median(values)), worst=values[0],
                      spread_best_minus_median=values[-1] - float(np.median(values)))  # fmt: skip
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        result["importance"] = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # too few finished trials, or no variation to explain
        result["importance"] = None
    return result
