"""Temporal windows: delta timestamps -> frame offsets, and window indices clamped to episode edges.

A window for key k at frame t holds frames t + o for each offset o of k. Where t + o falls outside the
frame's episode the index is clamped to the episode's first or last frame and `<k>_is_pad` is True
(LeRobot's semantics): the policy sees a repeated edge frame and can mask it out of its loss.
"""

from __future__ import annotations

import numpy as np

from policylab.datasets.errors import DatasetError


def delta_timestamps_to_offsets(
    delta_timestamps: dict[str, list[float]], fps: int, features: dict, tolerance_s: float = 1e-4
) -> dict[str, np.ndarray]:
    """Frame offsets per key; each delta must be a multiple of 1/fps within `tolerance_s`."""
    offsets = {}
    for key, deltas in delta_timestamps.items():
        if key not in features or features[key].get("dtype") == "string":
            windowable = [k for k, f in features.items() if f.get("dtype") != "string"]
            raise DatasetError(
                f"delta_timestamps key '{key}' is not a feature of this dataset; features: {', '.join(windowable)}"
            )
        if not isinstance(deltas, (list, tuple, np.ndarray)) or len(deltas) == 0:
            raise DatasetError(
                f"delta_timestamps['{key}'] must be a non-empty list of time offsets in seconds"
            )
        deltas = np.asarray(deltas, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(deltas)):
            raise DatasetError(f"delta_timestamps['{key}'] has a non-finite offset: {deltas.tolist()}")
        steps = np.round(deltas * fps)
        off_grid = np.abs(deltas - steps / fps) > tolerance_s
        if off_grid.any():
            bad = ", ".join(f"{d:g}" for d in deltas[off_grid])
            raise DatasetError(
                f"delta_timestamps['{key}'] has {bad} s, not a multiple of 1/fps = {1 / fps:g} s "
                f"(tolerance {tolerance_s:g} s)"
            )
        offsets[key] = steps.astype(np.int64)
    return offsets


def window_indices(
    positions: np.ndarray, offsets: np.ndarray, episode_start: np.ndarray, episode_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a window per position, and its padding mask.

    positions (B,), offsets (K,), episode_start/episode_end (B,) [start, end) of each position's episode.
    Returns idx (B, K) clamped into the episode, and is_pad (B, K) True where clamping happened.
    """
    idx = positions[:, None] + offsets[None, :]  # (B, K)
    start, last = episode_start[:, None], episode_end[:, None] - 1
    is_pad = (idx < start) | (idx > last)
    return np.clip(idx, start, last), is_pad
