"""Pure metric helpers for rollouts: success-rate confidence interval and path geometry."""

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
