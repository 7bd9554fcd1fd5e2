"""Roll a policy out in PushT and measure it: `evaluate_policy`.

Episode i is reset with seed `seed + i`. Episodes run `batch_size` at a time in a plain list of envs, with
one batched `policy.select_action` call per control step. An episode ends on success (gym-pusht's
`info["is_success"]`, which also terminates it) or after `max_steps` steps. A finished env is frozen: it
is no longer stepped, and its last observation keeps being fed to the policy so the batch shape (B) stays
fixed until every episode of the batch is done.

Per-episode metrics (averaged in the result):
    success            `info["is_success"]` at some step
    sum_reward         sum of per-step rewards (gym-pusht: goal coverage / 0.95, clipped to [0, 1])
    max_reward         max per-step reward: the "max coverage" score of the Diffusion Policy paper
    agent_path_length  px travelled by the agent (`info["pos_agent"]`, reset position included)
    block_path_length  px travelled by the block's reference point (`info["block_pose"][:2]`, the T's body
                       origin as gym-pusht reports it; a turn about the centre of gravity moves it too)
    path_efficiency    |block end - block start| / block_path_length; 1 = one straight push, 0 = never moved
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import av
import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from policylab.constants import OBS_ENV_STATE, OBS_IMAGE, OBS_STATE
from policylab.envs import EnvConfig, make_env
from policylab.evaluation.metrics import path_efficiency, path_length, wilson_interval

# PushT observation types, cheapest first (rendering pixels dominates a step), with the keys each gives.
OBS_TYPE_FEATURES = {
    "environment_state_agent_pos": {OBS_STATE, OBS_ENV_STATE},
    "pixels_agent_pos": {OBS_IMAGE, OBS_STATE},
    "pixels_environment_state_agent_pos": {OBS_IMAGE, OBS_STATE, OBS_ENV_STATE},
}
VIDEO_FPS = 10  # PushT's control rate


def obs_type_for(input_keys: set[str]) -> str:
    """The cheapest PushT obs_type that provides every key in `input_keys`."""
    for obs_type, provided in OBS_TYPE_FEATURES.items():
        if input_keys <= provided:
            return obs_type
    provided = set.union(*OBS_TYPE_FEATURES.values())
    raise ValueError(f"policy needs {sorted(input_keys - provided)}; PushT gives only {sorted(provided)}")


def write_video(frames: list[np.ndarray], path: Path, fps: int = VIDEO_FPS) -> Path:
    """Write (H, W, 3) uint8 frames to an mp4 (H.264 when FFmpeg has it, else MPEG-4 or AV1), yuv420p."""
    codec = next(c for c in ("libx264", "mpeg4", "libsvtav1") if c in av.codecs_available)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def evaluate_policy(
    policy,
    env: str | EnvConfig | gym.Env = "pusht",
    n_episodes: int = 50,
    max_steps: int = 300,
    seed: int = 0,
    batch_size: int = 10,
    device: torch.device | str | None = None,
    progress: bool = True,
    n_videos: int = 0,
    video_dir: str | Path | None = None,
) -> dict:
    """Run `n_episodes` episodes of `policy` and return aggregate metrics plus a `per_episode` list.

    env: a name (`"pusht"`, `"gym_pusht/PushT-v0"`, `"lerobot/pusht"`), an `EnvConfig` (its obs_type is
        replaced by the cheapest one covering `policy.config.input_shapes`), or one gymnasium env, reused
        for every episode (then batch_size is 1).
    device: where observations go; default the device of the policy's parameters.
    n_videos, video_dir: the first `n_videos` episodes are rendered to `video_dir/episode_{i}.mp4`.
    Policy sampling is seeded with `seed` inside a forked RNG, so the global torch RNG is left as it was.
    See the module docstring for the metric definitions.
    """
    input_keys = set(policy.config.input_shapes)
    if n_videos > 0 and video_dir is None:
        raise ValueError("n_videos > 0 needs a video_dir to write the episodes to")
    if isinstance(env, gym.Env):
        provided = set(env.observation_space.spaces)
        if not input_keys <= provided:
            raise ValueError(
                f"policy needs {sorted(input_keys - provided)}; the env gives {sorted(provided)}"
            )
        envs = [env]
    else:
        obs_type = obs_type_for(input_keys)
        envs = [make_env(env, obs_type=obs_type, max_episode_steps=max_steps) for _ in range(batch_size)]
    if device is None:
        device = next((p.device for p in policy.parameters()), torch.device("cpu"))
    device = torch.device(device)

    policy.eval()
    episodes, video_paths, inference_s, n_calls = [], [], 0.0, 0
    start = time.perf_counter()
    bar = tqdm(total=n_episodes, desc="eval", disable=not progress)
    with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for first in range(0, n_episodes, len(envs)):
            batch = list(range(first, min(first + len(envs), n_episodes)))
            policy.reset()
            resets = [envs[j].reset(seed=seed + i) for j, i in enumerate(batch)]
            obs, infos = [o for o, _ in resets], [info for _, info in resets]
            agent_xy = [[info["pos_agent"]] for info in infos]  # per episode, (steps + 1, 2)
            block_xy = [[info["block_pose"][:2]] for info in infos]
            rewards: list[list[float]] = [[] for _ in batch]
            frames = [[envs[j].render()] if i < n_videos else None for j, i in enumerate(batch)]
            success, done = [False] * len(batch), [False] * len(batch)
            while not all(done):
                policy_obs = {
                    k: torch.from_numpy(np.stack([o[k] for o in obs])).to(device) for k in input_keys
                }
                tic = time.perf_counter()
                actions = (
                    policy.select_action(policy_obs).to("cpu").numpy()
                )  # (B, Da); .cpu waits for the GPU
                inference_s, n_calls = inference_s + time.perf_counter() - tic, n_calls + 1
                for j in range(len(batch)):
                    if done[j]:
                        continue  # frozen: its last observation stays in `obs`
                    obs[j], reward, terminated, truncated, info = envs[j].step(actions[j])
                    rewards[j].append(float(reward))
                    agent_xy[j].append(info["pos_agent"])
                    block_xy[j].append(info["block_pose"][:2])
                    if frames[j] is not None:
                        frames[j].append(envs[j].render())
                    success[j] = bool(info.get("is_success", False))
                    done[j] = success[j] or terminated or truncated or len(rewards[j]) >= max_steps
                    if done[j]:
                        bar.update(1)
            for j, i in enumerate(batch):
                if frames[j] is not None:
                    video_paths.append(str(write_video(frames[j], Path(video_dir) / f"episode_{i}.mp4")))
                episodes.append(
                    {
                        "seed": seed + i,
                        "success": success[j],
                        "steps": len(rewards[j]),
                        "sum_reward": math.fsum(rewards[j]),
                        "max_reward": float(np.max(rewards[j], initial=0.0)),
                        "agent_path_length": path_length(np.array(agent_xy[j])),
                        "block_path_length": path_length(np.array(block_xy[j])),
                        "path_efficiency": path_efficiency(np.array(block_xy[j])),
                    }
                )
    bar.close()

    def mean(key: str) -> float:
        return float(np.mean([e[key] for e in episodes])) if episodes else 0.0

    n_success = sum(e["success"] for e in episodes)
    return {
        "n_episodes": len(episodes),
        "success_rate": n_success / len(episodes) if episodes else 0.0,
        "success_rate_ci95": list(wilson_interval(n_success, len(episodes))),
        "avg_steps": mean("steps"),
        "avg_reward": mean("sum_reward"),
        "avg_max_reward": mean("max_reward"),
        "path_lengths": [e["agent_path_length"] for e in episodes],
        "path_efficiency": mean("path_efficiency"),
        "inference_ms_per_step": 1000.0 * inference_s / max(n_calls, 1),
        "wall_seconds": time.perf_counter() - start,
        "video_paths": video_paths,
        "per_episode": episodes,
    }
