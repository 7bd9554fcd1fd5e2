import math
from types import SimpleNamespace

import av
import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from policylab.envs import make_env
from policylab.evaluation import (
    aggregate,
    episode_metrics,
    evaluate_policy,
    path_efficiency,
    path_length,
    wilson_interval,
)

KEYPOINT_INPUTS = {"observation.state": [2], "observation.environment_state": [16]}


class PushTowardBlock(nn.Module):
    """Scripted stand-in for a policy: targets the mean of the T's keypoints, which shoves the block."""

    def __init__(self, input_shapes=None):
        super().__init__()
        self.config = SimpleNamespace(input_shapes=input_shapes or KEYPOINT_INPUTS)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the policy a device
        self.batch_sizes, self.n_resets = [], 0

    def reset(self):
        self.n_resets += 1

    def select_action(self, obs):
        keypoints = obs["observation.environment_state"].reshape(-1, 8, 2)  # (B, 8, 2)
        self.batch_sizes.append(len(keypoints))
        return keypoints.mean(dim=1) + self.anchor  # (B, 2)


class StartAtGoal(gym.Wrapper):
    """Resets with the block already on the goal, the agent in a far corner."""

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options={"reset_to_state": [40.0, 40.0, 256.0, 256.0, math.pi / 4]})


def test_wilson_interval_matches_hand_computation():
    # z = 1.96: 0/10 -> upper z^2/(n+z^2); 5/10 -> 0.5 +- z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_path_length_and_efficiency_of_known_polylines():
    square_walk = np.array([[0, 0], [3, 0], [3, 4], [0, 4]])  # 3 + 4 + 3 = 10, ends 4 from the start
    assert path_length(square_walk) == pytest.approx(10.0)
    assert path_efficiency(square_walk) == pytest.approx(0.4)
    assert path_efficiency(np.array([[0, 0], [3, 4]])) == pytest.approx(1.0)
    assert path_length(np.zeros((1, 2))) == 0.0 and path_efficiency(np.ones((5, 2))) == 0.0


def test_rollout_reports_every_metric_and_is_deterministic(tmp_path):
    policy = PushTowardBlock()
    kwargs = dict(n_episodes=4, max_steps=50, seed=7, batch_size=3, progress=False)
    result = evaluate_policy(policy, "lerobot/pusht", n_videos=1, video_dir=tmp_path, **kwargs)
    for key in ("success_rate", "success_rate_ci95", "avg_steps", "avg_reward", "avg_max_reward",
                "path_lengths", "path_efficiency", "inference_ms_per_step", "wall_seconds"):  # fmt: skip
        assert key in result
    episodes = result["per_episode"]
    assert [e["seed"] for e in episodes] == [7, 8, 9, 10] and len(result["path_lengths"]) == 4
    assert all(1 <= e["steps"] <= 50 and e["max_reward"] <= 1.0 for e in episodes)
    assert any(e["block_path_length"] > 0 for e in episodes)  # the scripted push does move the block
    assert 0.0 <= result["path_efficiency"] <= 1.0
    low, high = result["success_rate_ci95"]
    assert low <= result["success_rate"] <= high
    # batches of 3 then 1, the batch shape fixed while episodes finish; one reset per batch
    assert set(policy.batch_sizes) == {3, 1} and policy.n_resets == 2

    again = evaluate_policy(PushTowardBlock(), "pusht", **kwargs)
    # gym-pusht unions the block's polygons in set order, so coverage (the reward) may differ in the last bit
    for first_run, second_run in zip(episodes, again["per_episode"], strict=True):
        assert second_run == pytest.approx(first_run, rel=1e-12)

    (video,) = result["video_paths"]
    with av.open(video) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == episodes[0]["steps"] + 1 and frames[0].ndim == 3


def test_a_camera_policy_s_video_shows_its_frames_beside_the_render(tmp_path):
    inputs = {**KEYPOINT_INPUTS, "observation.image": [3, 96, 96]}
    env = make_env("pusht", obs_type="pixels_environment_state_agent_pos")
    result = evaluate_policy(PushTowardBlock(inputs), env, n_episodes=1, max_steps=3, n_videos=1,
                             video_dir=tmp_path, progress=False)  # fmt: skip
    render = env.render()  # (H, W, 3), the full-resolution view
    with av.open(result["video_paths"][0]) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    scale = render.shape[0] // 96
    assert first.shape == (render.shape[0], render.shape[1] + 96 * scale, 3)
    camera = first[: 96 * scale, render.shape[1] :].astype(float)  # the 96x96 frame, enlarged
    observed = env.reset(seed=0)[0]["observation.image"].repeat(scale, 0).repeat(scale, 1).astype(float)
    assert np.abs(camera - observed).mean() < 12  # the episode's first camera frame (after video compression)


def test_success_ends_the_episode_with_a_given_env_object():
    env = StartAtGoal(make_env("pusht", obs_type="environment_state_agent_pos"))
    result = evaluate_policy(PushTowardBlock(), env, n_episodes=2, max_steps=20, progress=False)
    assert result["success_rate"] == 1.0 and result["avg_steps"] == 1.0
    assert result["avg_max_reward"] == 1.0


def test_unprovidable_policy_input_is_named():
    with pytest.raises(ValueError, match=r"observation\.images\.top"):
        evaluate_policy(
            PushTowardBlock({"observation.images.top": [3, 96, 96]}), n_episodes=1, progress=False
        )
    pixels_only = make_env("pusht", obs_type="pixels_agent_pos")
    with pytest.raises(ValueError, match=r"observation\.environment_state.*env gives"):
        evaluate_policy(PushTowardBlock(), pixels_only, n_episodes=1, progress=False)


def test_episode_metrics_and_aggregate_of_hand_made_episodes():
    # agent: right 3 then up 4 (7 px); block: pushed 6 px right then 2 px back (efficiency 4 / 8)
    agent = np.array([[0, 0], [3, 0], [3, 4]])
    block = np.array([[10, 10], [16, 10], [14, 10]])
    won = episode_metrics(5, True, [0.25, 1.0], agent, block)
    assert won == {"seed": 5, "success": True, "steps": 2, "sum_reward": 1.25, "max_reward": 1.0,
                   "agent_path_length": 7.0, "block_path_length": 8.0, "path_efficiency": 0.5}  # fmt: skip
    lost = episode_metrics(6, False, [0.0, 0.1, 0.2, 0.3], np.zeros((5, 2)), np.zeros((5, 2)))
    assert lost["steps"] == 4 and lost["max_reward"] == 0.3 and lost["path_efficiency"] == 0.0

    summary = aggregate([won, lost])
    assert summary["n_episodes"] == 2 and summary["success_rate"] == 0.5
    assert summary["success_rate_ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert summary["avg_steps"] == 3.0 and summary["avg_reward"] == pytest.approx((1.25 + 0.6) / 2)
    assert summary["avg_max_reward"] == pytest.approx(0.65) and summary["path_efficiency"] == 0.25
    assert summary["path_lengths"] == [7.0, 0.0] and summary["avg_path_length"] == 3.5
