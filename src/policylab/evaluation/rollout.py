"""Roll a policy out in PushT and measure it: `evaluate_policy`.

Episode i is reset with seed `seed + i`. Episodes run `batch_size` at a time in a gymnasium `SyncVectorEnv`,
with one batched `policy.select_action` call per control step. An episode ends on success (gym-pusht's
`info["is_success"]`, which also terminates it) or after `max_steps` steps. The vector env autoresets in
gymnasium 1.x's next-step mode: the step after an episode ends returns a fresh episode's first observation
instead of stepping. Everything an env reports after its episode ended is ignored, and the batch keeps its
shape until every episode in it has ended. Metric definitions: `policylab.evaluation.metrics`.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from policylab.constants import OBS_ENV_STATE, OBS_IMAGE, OBS_STATE
from policylab.datasets.video import encode_video, playable_codec
from policylab.envs import EnvConfig, make_env
from policylab.errors import PolicylabError
from policylab.evaluation.metrics import aggregate, episode_metrics

# PushT observation types, cheapest first (rendering pixels dominates a step), with the keys each gives.
OBS_TYPE_FEATURES = {
    "environment_state_agent_pos": {OBS_STATE, OBS_ENV_STATE},
    "pixels_agent_pos": {OBS_IMAGE, OBS_STATE},
    "pixels_environment_state_agent_pos": {OBS_IMAGE, OBS_STATE, OBS_ENV_STATE},
}
VIDEO_FPS = 10  # PushT's control rate


class EnvMismatchError(PolicylabError, ValueError):
    """The policy needs observations the env cannot give."""


def obs_type_for(input_keys: set[str]) -> str:
    """The cheapest PushT obs_type that provides every key in `input_keys`."""
    for obs_type, provided in OBS_TYPE_FEATURES.items():
        if input_keys <= provided:
            return obs_type
    provided = set.union(*OBS_TYPE_FEATURES.values())
    raise EnvMismatchError(
        f"the policy needs {sorted(input_keys - provided)}, which PushT cannot give (it gives {sorted(provided)})"
    )


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
    """
    input_keys = set(policy.config.input_shapes)
    if n_videos > 0 and video_dir is None:
        raise ValueError("n_videos > 0 needs a video_dir to write the episodes to")
    if isinstance(env, gym.Env):
        provided = set(env.observation_space.spaces)
        if not input_keys <= provided:
            raise EnvMismatchError(
                f"the policy needs {sorted(input_keys - provided)}; the env gives {sorted(provided)}"
            )
        batch_size, make_one = 1, (lambda: env)
    else:
        make_one = partial(make_env, env, obs_type=obs_type_for(input_keys), max_episode_steps=max_steps)
    if device is None:
        device = next((p.device for p in policy.parameters()), torch.device("cpu"))
    device = torch.device(device)

    vector_envs: dict[int, gym.vector.SyncVectorEnv] = {}  # by size: full batches, then a shorter last one
    episodes, video_paths, timer = [], [], InferenceTimer()
    policy.eval()
    start = time.perf_counter()
    bar = tqdm(total=n_episodes, desc="eval", unit="episode", disable=not progress)
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for first in range(0, n_episodes, batch_size):
                indices = list(range(first, min(first + batch_size, n_episodes)))
                if len(indices) not in vector_envs:
                    vector_envs[len(indices)] = gym.vector.SyncVectorEnv(
                        [make_one] * len(indices), autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
                    )
                batch_episodes, batch_frames = _run_batch(
                    policy, vector_envs[len(indices)], [seed + i for i in indices], input_keys, device,
                    max_steps, record=[i < n_videos for i in indices], timer=timer, on_done=bar.update,
                )  # fmt: skip
                episodes += batch_episodes
                for i, frames in zip(indices, batch_frames, strict=True):
                    if frames is not None:
                        path = Path(video_dir) / f"episode_{i}.mp4"
                        video_paths.append(
                            str(encode_video(np.stack(frames), path, VIDEO_FPS, playable_codec()))
                        )
    finally:
        bar.close()
        if not isinstance(env, gym.Env):  # a caller's env object stays open for the caller
            for vector in vector_envs.values():
                vector.close()
    return {
        **aggregate(episodes),
        "inference_ms_per_step": timer.ms_per_call,
        "wall_seconds": time.perf_counter() - start,
        "video_paths": video_paths,
        "per_episode": episodes,
    }


class InferenceTimer:
    """Wall time of policy calls; the action's copy to the CPU waits for a GPU to finish."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0

    def add(self, seconds: float) -> None:
        self.seconds, self.calls = self.seconds + seconds, self.calls + 1

    @property
    def ms_per_call(self) -> float:
        return 1000.0 * self.seconds / max(self.calls, 1)


def _run_batch(
    policy, envs: gym.vector.SyncVectorEnv, seeds: list[int], input_keys: set[str], device: torch.device,
    max_steps: int, record: list[bool], timer: InferenceTimer, on_done,
) -> tuple[list[dict], list[list[np.ndarray] | None]]:  # fmt: skip
    """One episode per sub-env, from `seeds`, until all have ended: their records, and frames where recorded."""
    n = len(seeds)
    policy.reset()
    obs, info = envs.reset(seed=seeds)
    agent_xy = [[xy] for xy in info["pos_agent"]]  # per episode, (steps + 1, 2)
    block_xy = [[pose[:2]] for pose in info["block_pose"]]
    rewards: list[list[float]] = [[] for _ in range(n)]
    camera = OBS_IMAGE if OBS_IMAGE in input_keys else None  # what the policy sees, shown beside the render
    frames = [[video_frame(envs.envs[j].render(), obs, camera, j)] if record[j] else None for j in range(n)]
    success, done = [False] * n, [False] * n
    while not all(done):
        policy_obs = {k: torch.from_numpy(obs[k]).to(device) for k in input_keys}
        tic = time.perf_counter()
        actions = policy.select_action(policy_obs).to("cpu").numpy()  # (B, Da)
        timer.add(time.perf_counter() - tic)
        obs, reward, terminated, truncated, info = envs.step(actions)
        for j in range(n):
            if done[j]:
                continue  # this sub-env was autoreset into an episode nobody measures
            rewards[j].append(float(reward[j]))
            agent_xy[j].append(info["pos_agent"][j])
            block_xy[j].append(info["block_pose"][j][:2])
            if frames[j] is not None:
                frames[j].append(video_frame(envs.envs[j].render(), obs, camera, j))
            success[j] = bool(info["is_success"][j])
            done[j] = success[j] or bool(terminated[j] or truncated[j]) or len(rewards[j]) >= max_steps
            if done[j]:
                on_done(1)
    episodes = [
        episode_metrics(seeds[j], success[j], rewards[j], np.array(agent_xy[j]), np.array(block_xy[j]))
        for j in range(n)
    ]
    return episodes, frames


def video_frame(render: np.ndarray, obs: dict, camera: str | None, j: int) -> np.ndarray:
    """Sub-env `j`'s full-resolution render (H, W, 3), with the camera frame its policy saw beside it (enlarged
    by whole pixels, so the policy's resolution stays visible) when it has a camera input."""
    if camera is None:
        return render
    frame = obs[camera][j]  # (h, w, 3) uint8
    scale = max(1, render.shape[0] // frame.shape[0])
    enlarged = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    enlarged = np.pad(enlarged, ((0, render.shape[0] - enlarged.shape[0]), (0, 0), (0, 0)))
    return np.concatenate([render, enlarged], axis=1)
