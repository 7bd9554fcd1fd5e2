"""The built-in PushT expert: solves episodes, only reads the simulator, is reproducible and diverse."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from policylab.envs import make_env
from policylab.envs.pusht import AGENT_RADIUS, MAX_EPISODE_STEPS, WORKSPACE_SIZE
from policylab.experts import PushTExpert, PushTExpertConfig
from policylab.experts.pusht_planning import (
    PhysicsCopy,
    RoutePlanner,
    point_tee_distance,
    sample_contacts,
    segment_clears_tee,
    to_body,
)


def make_sim(seed: int, reset_to_state=None):
    env = make_env("pusht", obs_type="environment_state_agent_pos")
    env.reset(seed=seed, options=None if reset_to_state is None else {"reset_to_state": reset_to_state})
    return env, env.unwrapped


def run_expert(
    env_seed: int,
    expert_seed: int | None = 0,
    config: PushTExpertConfig | None = None,
    max_steps: int = MAX_EPISODE_STEPS,
    reset_to_state=None,
) -> tuple[np.ndarray, bool]:
    """The expert's actions on the env reset with `env_seed`, and whether the episode succeeded."""
    env, sim = make_sim(env_seed, reset_to_state)
    expert = PushTExpert(config, seed=expert_seed)
    expert.reset(sim)
    actions, success = [], False
    for _ in range(max_steps):
        action = expert.act(sim)
        actions.append(action)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            success = bool(terminated and info["is_success"])
            break
    return np.array(actions), success


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solves_fixed_seeds_within_the_step_limit(seed):
    actions, success = run_expert(seed, expert_seed=seed)
    assert success, f"seed {seed}: no success in {len(actions)} steps"


def test_act_only_reads_the_simulator():
    env, sim = make_sim(3)
    expert = PushTExpert(seed=0)
    expert.reset(sim)
    for _ in range(60):
        before = (sim.get_physics_state(), sim.np_random.bit_generator.state, sim.goal_pose.copy())
        action = expert.act(sim)
        after = (sim.get_physics_state(), sim.np_random.bit_generator.state, sim.goal_pose.copy())
        np.testing.assert_array_equal(after[0], before[0])
        assert after[1] == before[1]
        np.testing.assert_array_equal(after[2], before[2])
        env.step(action)


def test_same_seed_gives_the_same_actions():
    first, _ = run_expert(4, expert_seed=7, max_steps=60)
    second, _ = run_expert(4, expert_seed=7, max_steps=60)
    np.testing.assert_array_equal(first, second)


def test_diversity_gives_different_trajectories_from_one_start():
    first, _ = run_expert(4, expert_seed=1, max_steps=60)
    second, _ = run_expert(4, expert_seed=2, max_steps=60)
    length = min(len(first), len(second))
    assert np.abs(first[:length] - second[:length]).max() > 5.0


def test_without_diversity_the_expert_seed_does_not_matter():
    config = PushTExpertConfig(diversity=0.0)
    first, _ = run_expert(4, expert_seed=1, config=config, max_steps=60)
    second, _ = run_expert(4, expert_seed=2, config=config, max_steps=60)
    np.testing.assert_array_equal(first, second)


def test_reset_forgets_the_previous_episode():
    config = PushTExpertConfig(diversity=0.0)
    env, sim = make_sim(5)
    expert = PushTExpert(config)
    expert.reset(sim)
    for _ in range(30):
        env.step(expert.act(sim))
    env, sim = make_sim(6)
    expert.reset(sim)
    reused = []
    for _ in range(30):
        reused.append(expert.act(sim))
        env.step(reused[-1])
    fresh, _ = run_expert(6, config=config, max_steps=30)
    np.testing.assert_array_equal(np.array(reused), fresh)


def test_actions_are_float32_targets_in_the_workspace_and_move_smoothly():
    # the block in a corner and the agent at the edge: routes around the block leave the workspace
    config = PushTExpertConfig()
    actions, _ = run_expert(0, reset_to_state=[10.0, 500.0, 90.0, 70.0, 2.5], max_steps=80)
    assert actions.dtype == np.float32 and actions.shape[1:] == (2,)
    assert actions.min() >= 0.0 and actions.max() <= WORKSPACE_SIZE
    steps = np.linalg.norm(np.diff(actions.astype(np.float64), axis=0), axis=1)
    fastest = (1.0 + config.speed_jitter) * max(
        config.travel_speed, config.push_speed, config.fine_push_speed
    )
    assert steps.max() <= fastest + 1e-3


def test_physics_copy_reproduces_the_env():
    env, sim = make_sim(0, reset_to_state=[256.0, 180.0, 250.0, 300.0, 0.2])
    copy = PhysicsCopy()
    copy.load(sim.get_physics_state())
    for k in range(40):  # straight into the block's bar, pushing it along
        target = np.array([256.0, 180.0 + 4.0 * k], dtype=np.float32)
        env.step(target)
        copy.step(*(float(v) for v in target))
    assert sim.block_pose[1] > 310.0  # the push moved the block
    np.testing.assert_array_equal(np.array(copy.save()), sim.get_physics_state())


def test_routes_go_around_the_block_with_clearance():
    pose, clearance = (256.0, 256.0, 0.7), AGENT_RADIUS + 6.0
    start, goal = (60.0, 60.0), (440.0, 460.0)  # opposite sides of the T
    assert not segment_clears_tee(*to_body(pose, *start), *to_body(pose, *goal), clearance)
    waypoints = RoutePlanner(pose, start, start, clearance).route(goal)
    assert waypoints is not None and len(waypoints) >= 3
    points = [to_body(pose, *p) for p in [start, *waypoints]]
    for a, b in itertools.pairwise(points):
        assert segment_clears_tee(*a, *b, clearance - 1e-6)


def test_contacts_start_just_off_the_surface():
    pose, gap, clearance = (200.0, 300.0, -1.1), 2.0, AGENT_RADIUS + 6.0
    contacts = sample_contacts(pose, spacing=15.0, phase=0.5, gap=gap, clearance=clearance)
    assert len(contacts) > 15
    for contact in contacts:
        assert math.isclose(point_tee_distance(*to_body(pose, *contact.precontact)), AGENT_RADIUS + gap)
        assert point_tee_distance(*to_body(pose, *contact.approach)) >= clearance
