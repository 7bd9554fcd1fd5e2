"""Rollout metrics: per-episode records, their aggregate, the success-rate interval and path geometry.

Per-episode metrics (`episode_metrics`):
    success            the env reported success (`info["is_success"]`) at some step
    steps              control steps taken
    sum_reward         sum of per-step rewards (gym-pusht: goal coverage / 0.95, clipped to [0, 1])
    max_reward         max per-step reward: the "max coverage" score of the Diffusion Policy paper
    agent_path_length  px travelled by the agent (reset position included)
    block_path_length  px travelled by the block's reference point (gym-pusht's `block_pose[:2]`, the T's body
                       origin; a turn about the centre of gravity moves it too)
    path_efficiency    |block end - block start| / block_path_length; 1 = one straight push, 0 = never moved
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when `n` is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or n/n, which is
    what a 50-episode success rate often is.
    """
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def path_length(points: np.ndarray) -> float:
    """Length of the polyline through (N, 2) `points` (0 for fewer than two points)."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def path_efficiency(points: np.ndarray) -> float:
    """Straight-line distance from the first to the last of (N, 2) `points`, divided by the path length.

    1 for a straight push, towards 0 for a block shoved back and forth; 0 when it never moved.
    """
    length = path_length(points)
    if length == 0.0:
        return 0.0
    points = np.asarray(points, dtype=np.float64)
    return float(np.linalg.norm(points[-1] - points[0]) / length)


def episode_metrics(
    seed: int, success: bool, rewards: list[float], agent_xy: np.ndarray, block_xy: np.ndarray
) -> dict:
    """One episode's record; `agent_xy`, `block_xy` are (steps + 1, 2) positions, the reset one first."""
    return {
        "seed": seed,
        "success": bool(success),
        "steps": len(rewards),
        "sum_reward": math.fsum(rewards),
        "max_reward": float(np.max(rewards, initial=0.0)),
        "agent_path_length": path_length(agent_xy),
        "block_path_length": path_length(block_xy),
        "path_efficiency": path_efficiency(block_xy),
    }


def aggregate(episodes: list[dict]) -> dict:
    """Means over episode records, the success rate with its 95% Wilson interval, and the agent path lengths."""

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
        "avg_path_length": mean("agent_path_length"),
        "path_efficiency": mean("path_efficiency"),
    }
