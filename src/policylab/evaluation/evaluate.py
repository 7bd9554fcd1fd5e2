"""`policylab eval`: load a checkpoint, roll it out (or measure it offline), print the metrics and write
`eval_info.json`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from policylab.datasets import DatasetConfig, LeRobotDatasetMetadata
from policylab.evaluation.configs import EvalConfig
from policylab.evaluation.offline import evaluate_offline
from policylab.evaluation.rollout import evaluate_policy
from policylab.runs import Checkpoint, checked_output_dir, default_output_dir
from policylab.utils.device import select_device
from policylab.utils.files import write_json

EVAL_INFO = "eval_info.json"
AGGREGATED_KEYS = (
    "n_episodes", "success_rate", "success_rate_ci95", "avg_steps", "avg_reward", "avg_max_reward",
    "path_lengths", "avg_path_length", "path_efficiency", "inference_ms_per_step", "wall_seconds",
)  # fmt: skip


def run_eval(config: EvalConfig, overrides: list[str], offline: bool = False) -> Path:
    """Evaluate the checkpoint of `config.policy.path` (with `--policy.*` overrides) in the simulator, or
    `offline` against held-out demonstrations of `config.dataset`; returns eval_info.json."""
    device = select_device(config.device)
    checkpoint = Checkpoint.resolve(config.policy.path)
    changes = checkpoint.changes(overrides)
    output_dir = checked_output_dir(config.output_dir or default_output_dir("eval", checkpoint.config.type))
    policy = checkpoint.load(device, **changes)
    if offline:
        info = evaluate_checkpoint_offline(policy, checkpoint, changes, config, device, output_dir)
        print(format_offline(info))
        print(f"eval_info.json written to {(output_dir / EVAL_INFO).resolve()}")
        return output_dir / EVAL_INFO
    info = evaluate_checkpoint(policy, checkpoint, changes, config, device, output_dir)
    print(format_eval(info))
    for video in info["video_paths"]:
        print(f"video: {video}")
    print(f"eval_info.json written to {(output_dir / EVAL_INFO).resolve()}")
    return output_dir / EVAL_INFO


def eval_settings(checkpoint: Checkpoint, changes: dict, config: EvalConfig, device) -> dict:
    """Everything an evaluation's result depends on besides the code: to tell whether one can be reused."""
    return {
        "checkpoint": str(checkpoint.folder.resolve()),
        "overrides": changes,
        "env": {"type": config.env.type, **asdict(config.env)},
        "seed": config.seed,
        "device": str(device),
        **asdict(config.eval),
    }


def evaluate_checkpoint(
    policy, checkpoint: Checkpoint, changes: dict, config: EvalConfig, device, output_dir: Path
) -> dict:
    """Roll `policy` (loaded from `checkpoint` with `changes` to its config) out as `config` says; writes and
    returns the eval_info dict (videos in output_dir/videos)."""
    results = evaluate_policy(
        policy,
        config.env,
        n_episodes=config.eval.n_episodes,
        max_steps=config.env.max_episode_steps,
        seed=config.seed,
        batch_size=config.eval.batch_size,
        device=device,
        n_videos=config.eval.n_videos,
        video_dir=output_dir / "videos",
    )
    info = {
        "aggregated": {k: results[k] for k in AGGREGATED_KEYS},
        "per_episode": results["per_episode"],
        "video_paths": results["video_paths"],
        "policy": {"path": checkpoint.path, "overrides": changes, "config": policy.config.to_dict()},
        "settings": eval_settings(checkpoint, changes, config, device),
    }
    write_json(output_dir / EVAL_INFO, info)
    return info


def held_out_episodes(checkpoint: Checkpoint, root: Path, dataset: DatasetConfig) -> tuple[list[int], str]:
    """The episodes to measure offline, and where they come from: --dataset.episodes, else the episodes the
    policy's training run held out of this dataset, else every episode (with a note that none was held out)."""
    if dataset.episodes:
        return sorted(dataset.episodes), "--dataset.episodes"
    split = checkpoint.split()
    if split and split["val_episodes"] and Path(split["dataset"]).resolve() == root.resolve():
        return split["val_episodes"], "held out by the training run"
    episodes = [e.episode_index for e in LeRobotDatasetMetadata(root).episodes]
    print(
        f"policylab eval: none of the {len(episodes)} episodes of {root} was held out when this policy trained "
        "(train with --dataset.val_fraction=0.1 to hold some out); measuring on all of them",
        file=sys.stderr,
    )
    return episodes, "all episodes (none held out)"


def offline_settings(checkpoint: Checkpoint, changes: dict, config: EvalConfig, device) -> dict:
    """What an offline evaluation measures: the checkpoint, the dataset and its held-out episodes."""
    root = checkpoint.dataset_root(config.dataset, "eval")
    episodes, source = held_out_episodes(checkpoint, root, config.dataset)
    return {"checkpoint": str(checkpoint.folder.resolve()), "overrides": changes, "dataset": str(root),
            "episodes": episodes, "source": source, "device": str(device), "frame_stride": config.eval.frame_stride}  # fmt: skip


def evaluate_checkpoint_offline(
    policy, checkpoint: Checkpoint, changes: dict, config: EvalConfig, device, output_dir: Path
) -> dict:
    """Measure `policy` against the held-out episodes of `config.dataset` (or its run's); writes eval_info.json."""
    settings = offline_settings(checkpoint, changes, config, device)
    results = evaluate_offline(
        policy, Path(settings["dataset"]), settings["episodes"], config.eval.frame_stride
    )
    info = {
        "mode": "offline",
        **results,
        "episodes": {
            "indices": settings["episodes"],
            "source": settings["source"],
            "dataset": settings["dataset"],
        },
        "policy": {"path": checkpoint.path, "overrides": changes, "config": policy.config.to_dict()},
        "settings": settings,
    }
    write_json(output_dir / EVAL_INFO, info)
    return info


def format_offline(info: dict) -> str:
    """The offline metrics: overall figures, then one row per action dimension."""
    a = info["aggregated"]
    title = (f"{info['policy']['config']['type']} policy from {info['policy']['path']}, offline on {a['n_episodes']} "
             f"episodes ({a['n_frames']} frames, {info['episodes']['source']}) of {info['episodes']['dataset']}")  # fmt: skip
    rows = [
        ("action chunk L1 / MSE (dataset units)", f"{a['action_l1']:.4g} / {a['action_mse']:.4g}"),
        ("replayed actions L1", f"{a['replay_l1']:.4g}"),
        ("jerk predicted / demonstrated", f"{a['jerk_predicted']:.4g} / {a['jerk_demonstrated']:.4g}"),
        ("gripper agreement", "n/a (no gripper dimension)" if a["gripper_agreement"] is None else f"{100 * a['gripper_agreement']:.1f} %"),
        ("policy inference per step (ms)", f"{a['inference_ms_per_step']:.2f}"),
    ]  # fmt: skip
    rows += [
        (f"  {name}: L1 chunk / replay", f"{l1:.4g} / {replay:.4g}")
        for name, l1, replay in zip(
            a["action_names"], a["action_l1_per_dim"], a["replay_l1_per_dim"], strict=True
        )
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([title, *(f"  {name:<{width}}  {value}" for name, value in rows)])


def format_eval(info: dict) -> str:
    """The aggregated metrics of an eval_info dict as an aligned two-column table."""
    a, settings = info["aggregated"], info["settings"]
    seed = settings["seed"]
    low, high = a["success_rate_ci95"]
    rows = [
        ("success rate", f"{100 * a['success_rate']:.1f} %  (95 % CI {100 * low:.1f}-{100 * high:.1f})"),
        ("mean steps", f"{a['avg_steps']:.1f}"),
        ("mean sum of rewards", f"{a['avg_reward']:.2f}"),
        ("mean max reward (max coverage)", f"{a['avg_max_reward']:.3f}"),
        ("mean agent path length (px)", f"{a['avg_path_length']:.0f}"),
        ("block path efficiency", f"{a['path_efficiency']:.3f}"),
        ("policy inference per step (ms)", f"{a['inference_ms_per_step']:.2f}"),
        ("wall time (s)", f"{a['wall_seconds']:.1f}"),
    ]
    title = (
        f"{info['policy']['config']['type']} policy from {info['policy']['path']} on {settings['env']['type']}: "
        f"{a['n_episodes']} episodes, seeds {seed}-{seed + a['n_episodes'] - 1}, {settings['device']}"
    )
    width = max(len(name) for name, _ in rows)
    return "\n".join([title, *(f"  {name:<{width}}  {value}" for name, value in rows)])
