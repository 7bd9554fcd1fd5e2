"""Record expert demonstrations into a LeRobot-format dataset (`policylab record`).

Attempt k runs the expert on the env reset with seed `seed + k`; attempts run in worker processes and are
written in attempt order, so the dataset does not depend on the number of workers. Every episode is
committed atomically (see `LeRobotDatasetWriter`), and `meta/recording.json` logs each attempt's seed and
outcome; rerunning the same command on the same root resumes after the last committed attempt.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policylab.constants import ACTION, DONE, OBS_IMAGE, REWARD, SUCCESS
from policylab.datasets.errors import DatasetError
from policylab.datasets.layout import CODEBASE_VERSIONS, default_data_home, read_json
from policylab.datasets.writer import LeRobotDatasetWriter
from policylab.envs import make_env
from policylab.envs.configs import EnvConfig, PushTEnvConfig
from policylab.envs.pusht import OBS_TYPES
from policylab.errors import ConfigError
from policylab.experts.pusht import PushTExpert, PushTExpertConfig
from policylab.utils.files import write_json
from policylab.utils.interrupts import deferred_interrupts

RECORDING_LOG = "meta/recording.json"
PUSHT_TASK = "Push the T-shaped block onto the T-shaped target."


@dataclass
class RecordDatasetConfig:
    """Where and how the demonstrations are written.

    repo_id: dataset name; without --dataset.root it is written to <data home>/<repo_id> ($POLICYLAB_HOME,
        else ~/.cache/policylab/datasets), where `--dataset.repo_id=<repo_id>` finds it later.
    root: dataset folder to create (overrides the data home), or to resume when it holds a recording.
    num_episodes: number of successful episodes to record.
    codebase_version: LeRobot layout to write, v3.0 (LeRobot >= 0.4) or v2.1 (LeRobot 0.1-0.3).
    task: language instruction stored with every episode.
    """

    repo_id: str = "pusht"
    root: str | None = None
    num_episodes: int = 50
    codebase_version: str = "v3.0"
    task: str = PUSHT_TASK

    @property
    def folder(self) -> Path:
        return Path(self.root) if self.root is not None else default_data_home() / self.repo_id


@dataclass
class RecordConfig:
    """policylab record: run the built-in expert and write its demonstrations.

    seed: attempt k resets the env with seed + k (episodes are reproducible one by one).
    num_workers: expert processes running in parallel (episodes are still written in seed order).
    keep_failed: also write episodes in which the expert did not succeed.
    max_attempts: give up after this many attempts (default: 2 x num_episodes + 10).
    """

    env: EnvConfig = field(default_factory=PushTEnvConfig)
    dataset: RecordDatasetConfig = field(default_factory=RecordDatasetConfig)
    expert: PushTExpertConfig = field(default_factory=PushTExpertConfig)
    seed: int = 0
    num_workers: int = 2
    keep_failed: bool = False
    max_attempts: int | None = None


@dataclass
class Attempt:
    seed: int
    success: bool
    length: int
    seconds: float
    mean_action_delta: float  # mean |a_t - a_(t-1)| in px: how smooth the expert's commands are
    frames: dict[str, np.ndarray]


def check_record_config(config: RecordConfig) -> None:
    """Reject flag values that would fail later, naming the flag (before any episode runs)."""
    problems = {
        "--dataset.num_episodes": (config.dataset.num_episodes >= 1, "must be at least 1"),
        "--num_workers": (config.num_workers >= 1, "must be at least 1"),
        "--max_attempts": (config.max_attempts is None or config.max_attempts >= 1, "must be at least 1"),
        "--dataset.codebase_version": (
            config.dataset.codebase_version in CODEBASE_VERSIONS,
            f"must be one of {', '.join(CODEBASE_VERSIONS)}",
        ),
        "--env.obs_type": (config.env.obs_type in OBS_TYPES, f"must be one of {', '.join(OBS_TYPES)}"),
        "--env.max_episode_steps": (config.env.max_episode_steps >= 1, "must be at least 1"),
    }
    for flag, (ok, expected) in problems.items():
        if not ok:
            raise ConfigError(f"{flag}: {expected}")


def dataset_features(env_config: EnvConfig) -> dict[str, dict]:
    """LeRobot feature specs for what the env observes, plus action, reward, done and success."""
    env = make_env(env_config)
    features = {}
    for key, space in env.observation_space.spaces.items():
        if key == OBS_IMAGE:
            features[key] = {
                "dtype": "video",
                "shape": list(space.shape),
                "names": ["height", "width", "channels"],
            }
        else:
            features[key] = {"dtype": "float32", "shape": list(space.shape), "names": None}
    env.close()
    features[ACTION] = {"dtype": "float32", "shape": [2], "names": ["x", "y"]}
    features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    features[SUCCESS] = {"dtype": "bool", "shape": [1], "names": None}
    return features


def run_expert_episode(env_config: EnvConfig, expert_config: PushTExpertConfig, seed: int) -> Attempt:
    """One expert episode from `env.reset(seed=seed)`: frame t holds the observation before action t."""
    started = time.perf_counter()
    env = make_env(env_config)
    expert = PushTExpert(expert_config, seed=seed)
    observation, _ = env.reset(seed=seed)
    expert.reset(env.unwrapped)
    frames: dict[str, list] = {key: [] for key in [*observation, ACTION, REWARD, DONE, SUCCESS]}
    success, done = False, False
    while not done:
        action = expert.act(env.unwrapped)
        for key, value in observation.items():
            frames[key].append(value)
        observation, reward, terminated, truncated, info = env.step(action)
        success, done = bool(info["is_success"]), terminated or truncated
        frames[ACTION].append(np.asarray(action, dtype=np.float32))
        frames[REWARD].append(np.float32(reward))
        frames[DONE].append(done)
        frames[SUCCESS].append(success)
    env.close()
    stacked = {key: np.stack(values) for key, values in frames.items()}
    deltas = np.linalg.norm(np.diff(stacked[ACTION], axis=0), axis=1)
    seconds = time.perf_counter() - started
    return Attempt(
        seed, success, len(stacked[ACTION]), seconds, float(deltas.mean()) if len(deltas) else 0.0, stacked
    )


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which stops cleanly between episodes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RecordingLog:
    """meta/recording.json: every attempt's seed and outcome, reconciled with the committed episodes."""

    def __init__(self, root: Path, config: RecordConfig, num_committed: int):
        self.path = root / RECORDING_LOG
        previous = read_json(self.path) if self.path.is_file() else {}
        if previous:
            _check_same_settings(self.path, previous, self._settings(config))
        self.attempts: list[dict] = self._reconcile(previous.get("attempts", []), num_committed, config)
        self.config = config

    @staticmethod
    def _settings(config: RecordConfig) -> dict:
        """What must not change between a recording and its resumption (JSON-normalised)."""
        settings = {
            "seed": config.seed,
            "env": {"type": config.env.type, **asdict(config.env)},
            "expert": asdict(config.expert),
            "task": config.dataset.task,
            "keep_failed": config.keep_failed,
        }
        return json.loads(json.dumps(settings))

    @staticmethod
    def _reconcile(attempts: list[dict], num_committed: int, config: RecordConfig) -> list[dict]:
        """Drop attempts whose episode never committed; add the one a kill may have left unlogged."""
        kept = [a for a in attempts if a["episode_index"] is None or a["episode_index"] < num_committed]
        written = sum(a["episode_index"] is not None for a in kept)
        while written < num_committed:  # committed, but the process died before logging it
            seed = config.seed + len(kept)
            kept.append(
                {
                    "seed": seed,
                    "success": True if not config.keep_failed else None,  # None: not known
                    "length": None,
                    "seconds": None,
                    "mean_action_delta": None,
                    "episode_index": written,
                }
            )
            written += 1
        return kept

    @property
    def next_seed(self) -> int:
        return self.config.seed + len(self.attempts)

    def add(self, attempt: Attempt, episode_index: int | None) -> None:
        self.attempts.append(
            {
                "seed": attempt.seed,
                "success": attempt.success,
                "length": attempt.length,
                "seconds": round(attempt.seconds, 3),
                "mean_action_delta": round(attempt.mean_action_delta, 3),
                "episode_index": episode_index,
            }
        )

    def save(self) -> None:
        succeeded = [a for a in self.attempts if a["success"]]
        write_json(
            self.path,
            {
                **self._settings(self.config),
                "episodes_attempted": len(self.attempts),
                "episodes_succeeded": len(succeeded),
                "episodes_written": sum(a["episode_index"] is not None for a in self.attempts),
                "succeeded_seeds": [a["seed"] for a in succeeded],
                "failed_seeds": [a["seed"] for a in self.attempts if a["success"] is False],
                "attempts": self.attempts,
            },
        )


def _check_same_settings(path: Path, previous: dict, current: dict) -> None:
    flag_names = {"env": "env.*", "expert": "expert.*", "task": "dataset.task"}
    changed = [key for key, value in current.items() if previous.get(key) != value]
    if changed:
        flags = ", ".join(f"--{flag_names.get(key, key)}" for key in changed)
        raise DatasetError(
            f"{path}: this dataset was recorded with other settings ({flags} differ); resume with the same "
            f"flags or choose another --dataset.root"
        )


def record_dataset(config: RecordConfig) -> Path:
    """Record `config.dataset.num_episodes` expert episodes into `config.dataset.folder` (resuming if present)."""
    check_record_config(config)
    root = config.dataset.folder
    writer = LeRobotDatasetWriter(
        root,
        fps=config.env.fps,
        features=dataset_features(config.env),
        codebase_version=config.dataset.codebase_version,
        robot_type="2d pointer",
    )
    log = RecordingLog(root, config, writer.num_episodes)
    target = config.dataset.num_episodes
    max_attempts = config.max_attempts if config.max_attempts is not None else 2 * target + 10
    progress = tqdm(total=target, initial=writer.num_episodes, desc="recording", unit="episode")
    # spawn: no inherited pygame/torch state. On Ctrl-C or SIGTERM the queued attempts are cancelled and the
    # workers exit after the episode in hand (multiprocessing.Pool.terminate() could deadlock on a worker idle
    # in its task queue).
    pool = ProcessPoolExecutor(
        config.num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_interrupts
    )
    try:
        pending: deque[Future] = deque()
        next_seed = log.next_seed
        while writer.num_episodes < target:
            # keep a few attempts queued per worker; submit no more than could still be needed
            budget = min(target - writer.num_episodes, max_attempts - len(log.attempts)) - len(pending)
            while budget > 0 and len(pending) < 2 * config.num_workers:
                pending.append(pool.submit(run_expert_episode, config.env, config.expert, next_seed))
                next_seed, budget = next_seed + 1, budget - 1
            if not pending:
                break
            attempt = pending.popleft().result()
            with deferred_interrupts():
                episode_index = None
                if attempt.success or config.keep_failed:
                    episode_index = writer.add_episode(attempt.frames, config.dataset.task).episode_index
                log.add(attempt, episode_index)
                log.save()
            succeeded = sum(a["success"] for a in log.attempts)
            progress.set_postfix_str(f"success {succeeded}/{len(log.attempts)}", refresh=False)
            progress.update(int(episode_index is not None))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        progress.close()
    return root


def summarize_recording(root: Path) -> dict:
    """Figures a person checks after recording: success rate, lengths, smoothness, speed."""
    log = read_json(root / RECORDING_LOG)
    attempts = log["attempts"]
    timed = [a["seconds"] for a in attempts if a["seconds"] is not None]
    lengths = [a["length"] for a in attempts if a["success"] and a["length"] is not None]
    deltas = [a["mean_action_delta"] for a in attempts if a["mean_action_delta"] is not None]
    return {
        "root": str(root),
        "episodes_written": log["episodes_written"],
        "episodes_attempted": log["episodes_attempted"],
        "episodes_succeeded": log["episodes_succeeded"],
        "expert_success_rate": log["episodes_succeeded"] / max(1, log["episodes_attempted"]),
        "mean_successful_episode_length": float(np.mean(lengths)) if lengths else None,
        "mean_action_delta_px": float(np.mean(deltas)) if deltas else None,
        "mean_expert_seconds_per_episode": float(np.mean(timed)) if timed else None,
    }
