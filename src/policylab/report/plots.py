"""Pictures of what a policy does: predicted vs demonstrated action chunks, and training curves.

Figures are drawn with matplotlib's object-oriented API (no pyplot state), written as PNG, and sized
deterministically: `visualize_action_predictions` is `COLUMN_INCHES` x `n_samples` wide and
2 x `ROW_INCHES` high at `DPI`; `plot_training_curves` is `CURVE_PANEL_INCHES` per panel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from policylab.constants import ACTION, METRICS_FILE, OBS_ENV_STATE, OBS_STATE, PAD_SUFFIX
from policylab.datasets import DatasetConfig, LeRobotDataset, LeRobotDatasetMetadata
from policylab.envs.pusht import WORKSPACE_SIZE
from policylab.evaluation.evaluate import held_out_episodes
from policylab.evaluation.offline import action_names, replay_episode
from policylab.runs import Checkpoint, PolicyPathConfig, checked_output_dir, default_output_dir
from policylab.utils.device import select_device

DPI = 100
COLUMN_INCHES, ROW_INCHES = 3.2, 3.2
CURVE_PANEL_INCHES = (4.8, 3.2)
TRAJECTORY_PANEL_INCHES = (6.4, 1.6)
TRUE_COLOR, PREDICTED_COLOR = "tab:green", "tab:red"


def visualize_action_predictions(
    policy,
    dataset: LeRobotDataset,
    n_samples: int = 5,
    path: str | Path = "policy_comparison.png",
    seed: int = 0,
) -> Path:
    """Predicted vs demonstrated action chunks at `n_samples` random dataset frames; returns the PNG's path.

    Top row: with 2-D actions (PushT: target xy in the 512 px workspace) the two chunks drawn as paths over
    the scene (the camera image if the dataset has one, else the block's keypoints), the agent as a dot;
    other actions as one curve per dimension over the chunk. Bottom row: absolute error per step and
    dimension, with the steps past the episode's end (padding, not compared) shaded.
    """
    windows = _policy_windows(policy, dataset)
    rng = np.random.default_rng(seed)
    positions = rng.choice(len(windows), size=min(n_samples, len(windows)), replace=False)
    figure = Figure(figsize=(COLUMN_INCHES * len(positions), 2 * ROW_INCHES), dpi=DPI, layout="constrained")
    axes = figure.subplots(2, len(positions), squeeze=False)
    inputs = set(policy.config.input_shapes)
    for column, position in enumerate(positions):
        item = windows[int(position)]
        observation = {k: v[None] for k, v in item.items() if k in inputs}
        with torch.inference_mode():
            predicted = policy.predict_action_chunk(observation)[0].cpu().numpy()  # (T, Da)
        true, pad = item[ACTION].numpy(), item[ACTION + PAD_SUFFIX].numpy()  # (T, Da), (T,)
        steps = min(len(true), len(predicted))
        predicted, true, pad = predicted[:steps], true[:steps], pad[:steps]
        scene = _current(item, windows.meta.camera_keys[0]) if windows.meta.camera_keys else None
        _draw_chunks(axes[0, column], item, scene, predicted, true, pad)
        _draw_errors(axes[1, column], predicted, true, pad)
        axes[0, column].set_title(f"frame {int(position)}", fontsize=9)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    figure.suptitle(
        f"{policy.config.type}: predicted (red) vs demonstrated (green) action chunks", fontsize=10
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def open_with_policy_windows(policy, root: Path, episodes: list[int] | None = None) -> LeRobotDataset:
    """The dataset at `root` with the observation and action windows `policy` predicts from and for."""
    fps = LeRobotDatasetMetadata(root).fps
    return LeRobotDataset(root=root, delta_timestamps=policy.config.delta_timestamps(fps), episodes=episodes)


def _policy_windows(policy, dataset: LeRobotDataset) -> LeRobotDataset:
    """`dataset`, or the same data reopened with the policy's windows."""
    if dataset.delta_timestamps == policy.config.delta_timestamps(dataset.meta.fps):
        return dataset
    return open_with_policy_windows(policy, dataset.root, [e.episode_index for e in dataset.episodes])


def _current(item: dict, key: str) -> np.ndarray:
    """The current frame of `key` (the last of a window) as (H, W, C) in [0, 1]."""
    frame = item[key]
    frame = frame[-1] if frame.ndim == 4 else frame
    return frame.permute(1, 2, 0).numpy()


def _draw_chunks(ax, item, scene, predicted, true, pad) -> None:
    real = ~pad
    if predicted.shape[1] != 2:
        for dim in range(predicted.shape[1]):
            ax.plot(true[:, dim], color=TRUE_COLOR, alpha=0.5 + 0.5 * (dim == 0))
            ax.plot(predicted[:, dim], color=PREDICTED_COLOR, linestyle="--", alpha=0.5 + 0.5 * (dim == 0))
        ax.set_xlabel("chunk step", fontsize=8)
        return
    if scene is not None:
        ax.imshow(scene, extent=(0, WORKSPACE_SIZE, WORKSPACE_SIZE, 0))
    else:
        ax.set_xlim(0, WORKSPACE_SIZE), ax.set_ylim(WORKSPACE_SIZE, 0), ax.set_aspect("equal")
        if OBS_ENV_STATE in item:
            keypoints = _latest(item[OBS_ENV_STATE]).reshape(-1, 2)
            ax.scatter(*keypoints.T, s=8, color="tab:gray", label="block keypoints")
    if OBS_STATE in item:
        ax.scatter(*_latest(item[OBS_STATE])[:2], s=30, color="tab:blue", zorder=3, label="agent")
    ax.plot(*true[real].T, color=TRUE_COLOR, marker=".", markersize=3, label="demonstrated")
    ax.plot(*predicted.T, color=PREDICTED_COLOR, marker=".", markersize=3, linestyle="--", label="predicted")
    ax.tick_params(labelsize=7)


def _latest(values: torch.Tensor) -> np.ndarray:
    return (values[-1] if values.ndim == 2 else values).numpy()


def _draw_errors(ax, predicted, true, pad) -> None:
    error = np.abs(predicted - true)  # (T, Da)
    for dim in range(error.shape[1]):
        ax.plot(error[:, dim], label=f"dim {dim}")
    for step in np.flatnonzero(pad):
        ax.axvspan(step - 0.5, step + 0.5, color="0.85", linewidth=0)
    real = error[~pad]
    ax.set_title(f"|error|, mean {real.mean():.2f}" if len(real) else "|error| (all padding)", fontsize=9)
    ax.set_xlabel("chunk step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def plot_training_curves(run_dir: str | Path, path: str | Path = "training_curves.png") -> Path:
    """Loss terms and learning rate against step from `run_dir/metrics.jsonl`, and the success rate of the
    evaluations made during training when there were any; returns the PNG's path."""
    records = [json.loads(line) for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines() if line]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    panels = ["loss", "lr"] + (["eval"] if evals else [])
    width, height = CURVE_PANEL_INCHES
    figure = Figure(figsize=(width * len(panels), height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    steps = [r["step"] for r in train]
    for key in sorted({k for r in train for k in r if k.endswith("loss")}):
        axes[0].plot(steps, [r.get(key, np.nan) for r in train], label=key)
    axes[0].set_yscale("log"), axes[0].set_title("training loss (mean per logging window)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [r["lr"] for r in train]), axes[1].set_title("learning rate", fontsize=9)
    if evals:
        axes[2].plot([r["step"] for r in evals], [r["eval"]["success_rate"] for r in evals], marker="o")
        axes[2].set_ylim(0, 1), axes[2].set_title("success rate (evaluations during training)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def plot_trajectories(policy, root: Path, episodes: list[int], path: str | Path) -> Path:
    """Executed (replayed, open loop: `select_action` on the demonstration's observations) against demonstrated
    actions over whole episodes, one panel per action dimension and one column per episode; returns the path."""
    columns = []
    for index in episodes:
        episode = LeRobotDataset(root=root, episodes=[index], cameras=policy.config.image_keys)
        demonstrated, executed, _ = replay_episode(policy, episode)
        columns.append((index, demonstrated, executed, episode.fps))
    names = action_names(LeRobotDataset(root=root, episodes=episodes[:1], cameras=[]))
    width, height = TRAJECTORY_PANEL_INCHES
    figure = Figure(figsize=(width * len(columns), height * len(names)), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(names), len(columns), squeeze=False, sharex="col")
    for column, (index, demonstrated, executed, fps) in enumerate(columns):
        seconds = np.arange(len(demonstrated)) / fps
        for dim, name in enumerate(names):
            ax = axes[dim, column]
            ax.plot(seconds, demonstrated[:, dim], color=TRUE_COLOR, label="demonstrated")
            ax.plot(seconds, executed[:, dim], color=PREDICTED_COLOR, linestyle="--", label="policy")
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, column].set_title(f"episode {index}", fontsize=9)
        axes[-1, column].set_xlabel("time (s)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(
        f"{policy.config.type}: actions it executes from the demonstration's observations", fontsize=10
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


@dataclass
class PlotSettings:
    """What to draw.

    n_samples: dataset frames whose predicted and demonstrated action chunks are compared.
    n_episodes: whole held-out episodes drawn in trajectories.png (the run's held-out ones first).
    """

    n_samples: int = 5
    n_episodes: int = 2

    def __post_init__(self):
        for name in ("n_samples", "n_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--plot.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class PlotConfig:
    """policylab plot: predicted vs demonstrated action chunks (policy_comparison.png), executed vs demonstrated
    actions over whole held-out episodes (trajectories.png), and training curves (training_curves.png, when the
    policy comes from a training run).

    Frames come from --dataset (default: the dataset the policy was trained on); episodes from
    --dataset.episodes, else those the training run held out, else the first ones.
    output_dir: where the PNGs go (default outputs/plot/<time>_<policy type>).
    seed: picks the frames.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    policy: PolicyPathConfig = field(default_factory=PolicyPathConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    plot: PlotSettings = field(default_factory=PlotSettings)
    output_dir: str | None = None
    seed: int = 0
    device: str | None = None


def run_plot(config: PlotConfig, overrides: list[str]) -> list[Path]:
    """`policylab plot`: draw both figures, print their paths, return them."""
    device = select_device(config.device)
    checkpoint = Checkpoint.resolve(config.policy.path)
    changes = checkpoint.changes(overrides)
    root = checkpoint.dataset_root(config.dataset, "plot")
    output_dir = checked_output_dir(config.output_dir or default_output_dir("plot", checkpoint.config.type))
    policy = checkpoint.load(device, **changes)
    paths = [
        visualize_action_predictions(
            policy, open_with_policy_windows(policy, root), config.plot.n_samples,
            output_dir / "policy_comparison.png", config.seed,
        )
    ]  # fmt: skip
    episodes, _ = held_out_episodes(checkpoint, root, config.dataset)
    paths.append(
        plot_trajectories(policy, root, episodes[: config.plot.n_episodes], output_dir / "trajectories.png")
    )
    if checkpoint.run is not None and (checkpoint.run / METRICS_FILE).is_file():
        paths.append(plot_training_curves(checkpoint.run, output_dir / "training_curves.png"))
    for path in paths:
        print(f"plot written to {path.resolve()}")
    return paths
