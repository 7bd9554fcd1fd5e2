"""The multi-modality probe: does a policy produce the distinct pushes the demonstrations split between, or
their average?

From start states where the diverse expert's demonstrations split between distinct pushes, the probe
compares action chunks (the first `horizon` actions, px):

    demonstrated modes   the expert run `n_demos` times from the same state, each time with its own seed,
                         its chunks clustered: two chunks within `radius_px` (mean distance per step) are one mode
    policy modes         `n_samples` chunks the policy predicts from the same start observation, clustered alike
    covered              demonstrated modes with a policy chunk within `radius_px` of their centre
    off-mode share       policy chunks farther than `radius_px` from every demonstrated mode (an average of two
                         pushes is such a chunk)
    committed rollouts   `n_samples` rollouts of `horizon` steps from the state whose executed actions lie within
                         `radius_px` of a demonstrated mode

A mode counts when it holds at least `MIN_MODE_SHARE` of the chunks (one stray chunk is not a mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policylab.envs import make_env
from policylab.experts.pusht import PushTExpert, PushTExpertConfig

MIN_MODE_SHARE = 0.1
PROBE_OBS_TYPE = "environment_state_agent_pos"


def chunk_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean per-step L2 distance between chunks a (N, H, Da) and b (M, H, Da): (N, M)."""
    return np.linalg.norm(a[:, None] - b[None, :], axis=-1).mean(axis=-1)


def modes(chunks: np.ndarray, radius: float) -> list[np.ndarray]:
    """Cluster chunks (N, H, Da): repeatedly the chunk with the most others within `radius` becomes a mode's
    centre and takes them; returns the centres of the modes holding at least MIN_MODE_SHARE of the chunks."""
    near = chunk_distance(chunks, chunks) <= radius  # (N, N)
    left = np.ones(len(chunks), dtype=bool)
    centres = []
    while left.any():
        counts = (near & left[None, :]).sum(axis=1) * left
        centre = int(np.argmax(counts))
        members = near[centre] & left
        if members.sum() >= max(1, MIN_MODE_SHARE * len(chunks)):
            centres.append(chunks[members].mean(axis=0))
        left &= ~members
    return centres


def mode_stats(demonstrated: np.ndarray, predicted: np.ndarray, radius: float) -> dict:
    """What a policy's chunks (M, H, Da) do with the modes of the demonstrated chunks (N, H, Da)."""
    demo_modes = np.stack(modes(demonstrated, radius))
    to_modes = chunk_distance(predicted, demo_modes)  # (M, K)
    return {
        "demonstrated_modes": len(demo_modes),
        "policy_modes": len(modes(predicted, radius)),
        "covered_modes": int((to_modes <= radius).any(axis=0).sum()),
        "off_mode_share": float((to_modes > radius).all(axis=1).mean()),
    }


@dataclass
class ProbeState:
    """A start state: its env seed, the policy's first observation, the demonstrated chunks (N, H, 2)."""

    seed: int
    observation: dict[str, np.ndarray]
    demonstrated: np.ndarray


def demonstrations_from(seed: int, n_demos: int, horizon: int) -> ProbeState:
    """The diverse expert's first `horizon` actions, `n_demos` times from env.reset(seed=seed)."""
    chunks = []
    for k in range(n_demos):
        env = make_env("pusht", obs_type=PROBE_OBS_TYPE)
        observation, _ = env.reset(seed=seed)
        expert = PushTExpert(PushTExpertConfig(diversity=1.0), seed=seed * 1000 + k)
        expert.reset(env.unwrapped)
        actions = []
        for _ in range(horizon):
            action = expert.act(env.unwrapped)
            actions.append(np.asarray(action, dtype=np.float64))
            env.step(action)
        env.close()
        chunks.append(np.stack(actions))
    return ProbeState(seed, observation, np.stack(chunks))


def predicted_steps(policy) -> int:
    """Actions a policy predicts from the current step on: its chunk less the steps before now."""
    indices = policy.config.action_delta_indices
    return len(indices) + indices[0]


def predicted_chunks(
    policy, observation: dict[str, np.ndarray], n: int, horizon: int, seed: int
) -> np.ndarray:
    """`n` chunks the policy predicts from one observation (one batch of n copies; sampling policies draw
    each one's own noise): the first `horizon` actions from the current step, (n, horizon, Da)."""
    batch = {
        k: torch.as_tensor(np.repeat(v[None], n, axis=0))
        for k, v in observation.items()
        if k in policy.config.input_shapes
    }
    with torch.inference_mode(), torch.random.fork_rng():
        torch.manual_seed(seed)
        chunk = policy.predict_action_chunk(batch)
    start = -policy.config.action_delta_indices[0]  # a Diffusion horizon starts at the first observation step
    return chunk[:, start : start + horizon].cpu().numpy().astype(np.float64)


def executed_actions(policy, seed: int, n: int, horizon: int, sampling_seed: int) -> np.ndarray:
    """The actions `policy.select_action` executes in `n` rollouts of `horizon` steps from env seed `seed`
    (one batched call per step), (n, horizon, Da)."""
    envs = [make_env("pusht", obs_type=PROBE_OBS_TYPE) for _ in range(n)]
    observations = [env.reset(seed=seed)[0] for env in envs]
    policy.reset()
    actions = []
    with torch.inference_mode(), torch.random.fork_rng():
        torch.manual_seed(sampling_seed)
        for _ in range(horizon):
            batch = {
                k: torch.as_tensor(np.stack([o[k] for o in observations])) for k in policy.config.input_shapes
            }
            step = policy.select_action(batch).cpu().numpy()  # (n, Da)
            actions.append(step)
            observations = [env.step(a)[0] for env, a in zip(envs, step, strict=True)]
    for env in envs:
        env.close()
    return np.stack(actions, axis=1).astype(np.float64)


def probe_policy(policy, states: list[ProbeState], n_samples: int, horizon: int, radius: float) -> dict:
    """Mode statistics of `policy` at every state whose demonstrations split (>= 2 modes), and their means."""
    per_state = []
    for state in states:
        if len(modes(state.demonstrated, radius)) < 2:
            continue
        predicted = predicted_chunks(policy, state.observation, n_samples, horizon, seed=state.seed)
        stats = mode_stats(state.demonstrated, predicted, radius)
        rollouts = executed_actions(policy, state.seed, n_samples, horizon, sampling_seed=state.seed)
        demo_modes = np.stack(modes(state.demonstrated, radius))
        stats["committed_rollout_share"] = float(
            (chunk_distance(rollouts, demo_modes) <= radius).any(axis=1).mean()
        )
        per_state.append({"seed": state.seed, **stats, "chunks": predicted.round(2).tolist()})
    keys = (
        "demonstrated_modes",
        "policy_modes",
        "covered_modes",
        "off_mode_share",
        "committed_rollout_share",
    )
    means = {k: float(np.mean([s[k] for s in per_state])) if per_state else None for k in keys}
    return {"split_states": len(per_state), **means, "per_state": per_state}
