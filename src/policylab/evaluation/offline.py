"""Offline evaluation: a policy against held-out demonstrations, for a robot with no simulator.

Two views of the same held-out episodes, in the dataset's units:

    chunks     at every `frame_stride`-th frame the chunk the policy predicts from the dataset's observation
               window, against the demonstrated actions that follow (padded steps past the episode end left
               out): L1 and MSE per action dimension and per chunk position
    replay     the episode's observations fed to `select_action` one frame at a time after `reset()`, as on the
               robot, and the actions it would execute, against the demonstrated ones (open loop: the policy
               sees the demonstration's observations, not the results of its own actions): L1 per dimension,
               smoothness (mean |third difference| x fps^3, the jerk) of both trajectories, gripper agreement
               and the latency of each call

Gripper agreement (where an action dimension's name contains "gripper"): the share of steps where executed
and demonstrated gripper commands are on the same side of the midpoint between the dataset's min and max.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from policylab.constants import ACTION, PAD_SUFFIX
from policylab.datasets import LeRobotDataset

OFFLINE_KEYS = (
    "n_episodes", "n_frames", "action_names", "action_l1", "action_mse", "action_l1_per_dim", "action_mse_per_dim",
    "l1_by_chunk_step", "mse_by_chunk_step", "replay_l1", "replay_l1_per_dim", "gripper_agreement",
    "jerk_predicted", "jerk_demonstrated", "inference_ms_per_step",
)  # fmt: skip


def action_names(dataset: LeRobotDataset) -> list[str]:
    """Names of the action dimensions from meta/info.json (LeRobot writes a list, or {"motors": [...]})."""
    feature = dataset.meta.features[ACTION]
    names = feature.get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), None)
    dim = feature["shape"][0]
    return list(names) if isinstance(names, list) and len(names) == dim else [f"dim {i}" for i in range(dim)]


def gripper_index(names: list[str]) -> int | None:
    return next((i for i, name in enumerate(names) if "gripper" in name.lower()), None)


def jerk(actions: np.ndarray, fps: int) -> float:
    """Mean |third difference| of an (N, Da) trajectory, in units per s^3 (0 for fewer than 4 steps)."""
    if len(actions) < 4:
        return 0.0
    return float(np.abs(np.diff(actions, n=3, axis=0)).mean() * fps**3)


@torch.no_grad()
def chunk_errors(policy, windows: LeRobotDataset, frame_stride: int, batch_size: int = 64) -> dict:
    """Sums of |error| and error^2 per chunk position and dimension over every `frame_stride`-th frame."""
    positions = np.arange(0, len(windows), frame_stride)
    abs_sum = sq_sum = count = 0.0
    keys = list(policy.config.input_shapes)
    for start in range(0, len(positions), batch_size):
        batch = windows.gather(positions[start : start + batch_size])
        predicted = policy.predict_action_chunk(
            {k: batch[k].to(policy.device) for k in keys}
        ).cpu()  # (B, T, Da)
        steps = min(predicted.shape[1], batch[ACTION].shape[1])
        error = (predicted[:, :steps] - batch[ACTION][:, :steps]).double()  # (B, T, Da)
        real = (~batch[ACTION + PAD_SUFFIX][:, :steps]).double()[..., None]  # (B, T, 1)
        abs_sum = abs_sum + (error.abs() * real).sum(0)  # (T, Da)
        sq_sum = sq_sum + (error**2 * real).sum(0)
        count = count + real.sum(0)  # (T, 1)
    return {"abs": abs_sum.numpy(), "sq": sq_sum.numpy(), "count": count.numpy()}


@torch.no_grad()
def replay_episode(policy, episode: LeRobotDataset) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(demonstrated (N, Da), executed (N, Da), ms of each select_action call) over one episode, open loop."""
    keys = list(policy.config.input_shapes)
    policy.reset()
    executed, milliseconds = [], []
    for t in range(len(episode)):
        item = episode[t]
        observation = {k: item[k][None].to(policy.device) for k in keys}
        tic = time.perf_counter()
        action = policy.select_action(observation)
        if action.device.type == "cuda":
            torch.cuda.synchronize(action.device)
        milliseconds.append(1000 * (time.perf_counter() - tic))
        executed.append(action[0].cpu().numpy())
    demonstrated = np.stack([episode[t][ACTION].numpy() for t in range(len(episode))])
    return demonstrated, np.stack(executed), milliseconds


def evaluate_offline(policy, root, episodes: list[int], frame_stride: int = 1) -> dict:
    """Every figure of the module docstring for `policy` on `episodes` of the dataset at `root`; returns
    {"aggregated": {OFFLINE_KEYS}, "per_episode": [...]}."""
    policy.eval()
    fps = LeRobotDataset(root=root, episodes=episodes[:1], cameras=[]).fps
    windows = LeRobotDataset(root=root, episodes=episodes, delta_timestamps=policy.config.delta_timestamps(fps),
                             cameras=policy.config.image_keys)  # fmt: skip
    sums = chunk_errors(policy, windows, frame_stride)
    names = action_names(windows)
    gripper = gripper_index(names)
    stats = windows.stats[ACTION]
    middle = None if gripper is None else float((stats["min"][gripper] + stats["max"][gripper]) / 2)
    per_episode, replay_abs, replay_n, latencies = [], 0.0, 0, []
    for index in episodes:
        episode = LeRobotDataset(root=root, episodes=[index], cameras=policy.config.image_keys)
        demonstrated, executed, ms = replay_episode(policy, episode)
        latencies += ms
        replay_abs = replay_abs + np.abs(executed - demonstrated).sum(0)
        replay_n += len(executed)
        record = {
            "episode_index": index,
            "frames": len(executed),
            "replay_l1": float(np.abs(executed - demonstrated).mean()),
            "jerk_predicted": jerk(executed, fps),
            "jerk_demonstrated": jerk(demonstrated, fps),
            "gripper_agreement": None,
        }
        if gripper is not None:
            same = (executed[:, gripper] > middle) == (demonstrated[:, gripper] > middle)
            record["gripper_agreement"] = float(same.mean())
        per_episode.append(record)
    count = np.maximum(sums["count"], 1)  # (T, 1)
    l1, mse = sums["abs"] / count, sums["sq"] / count  # (T, Da)
    weights = sums["count"][:, 0] / max(
        sums["count"].sum(), 1
    )  # chunk positions weighted by their real steps
    aggregated = {
        "n_episodes": len(episodes),
        "n_frames": int(sum(r["frames"] for r in per_episode)),
        "action_names": names,
        "action_l1": float((l1.mean(1) * weights).sum()),
        "action_mse": float((mse.mean(1) * weights).sum()),
        "action_l1_per_dim": (weights @ l1).tolist(),
        "action_mse_per_dim": (weights @ mse).tolist(),
        "l1_by_chunk_step": l1.mean(1).tolist(),
        "mse_by_chunk_step": mse.mean(1).tolist(),
        "replay_l1": float((replay_abs / max(replay_n, 1)).mean()),
        "replay_l1_per_dim": (replay_abs / max(replay_n, 1)).tolist(),
        "gripper_agreement": None
        if gripper is None
        else float(
            np.average(
                [r["gripper_agreement"] for r in per_episode], weights=[r["frames"] for r in per_episode]
            )
        ),
        "jerk_predicted": float(np.mean([r["jerk_predicted"] for r in per_episode])),
        "jerk_demonstrated": float(np.mean([r["jerk_demonstrated"] for r in per_episode])),
        "inference_ms_per_step": float(np.mean(latencies)),
    }
    return {"aggregated": aggregated, "per_episode": per_episode}
