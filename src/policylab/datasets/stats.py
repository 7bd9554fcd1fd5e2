"""Normalization statistics in LeRobot's layout: per feature min, max, mean, std, count and quantiles.

Vectors get per-dimension statistics of shape (D,); images get per-channel statistics of shape (3, 1, 1)
on values in [0, 1], computed on a subsample of each episode's frames (as LeRobot does). Statistics are
computed per episode at write time and aggregated into the dataset's: counts add, means are weighted,
variances combine exactly (parallel formula), min and max are exact, and quantiles are the count-weighted
mean of the episodes' quantiles (LeRobot's approximation).
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
MAX_IMAGE_SAMPLES_PER_EPISODE = 100

Stats = dict[str, dict[str, np.ndarray]]


def is_visual(feature: dict) -> bool:
    return feature["dtype"] in ("video", "image")


def _sample_frame_indices(n_frames: int) -> np.ndarray:
    return np.unique(
        np.linspace(0, n_frames - 1, min(n_frames, MAX_IMAGE_SAMPLES_PER_EPISODE)).round().astype(int)
    )


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """frames (N, H, W, 3) uint8 -> per-channel statistics (3, 1, 1) on [0, 1] values."""
    sampled = frames[_sample_frame_indices(len(frames))]
    pixels = sampled.reshape(-1, sampled.shape[-1]).astype(np.float64) / 255.0  # (N*H*W, 3)
    stats = _vector_stats(pixels)
    return {
        k: v if k == "count" else v.reshape(-1, 1, 1)
        for k, v in {**stats, "count": np.array([len(sampled)])}.items()
    }


def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """values (N, D) -> per-dimension statistics (D,)."""
    values = values.astype(np.float64)
    stats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([len(values)]),
    }
    quantiles = np.quantile(values, list(QUANTILES.values()), axis=0)
    stats.update({name: q for name, q in zip(QUANTILES, quantiles, strict=True)})
    return stats


def compute_episode_stats(columns: dict[str, np.ndarray], features: dict[str, dict]) -> Stats:
    """Statistics of one episode for every numeric or visual feature present in `columns`."""
    stats = {}
    for key, values in columns.items():
        feature = features[key]
        if feature["dtype"] == "string":
            continue
        if is_visual(feature):
            stats[key] = _image_stats(values)
        else:
            stats[key] = _vector_stats(np.asarray(values).reshape(len(values), -1))
    return stats


def aggregate_stats(episode_stats: list[Stats]) -> Stats:
    """Combine per-episode statistics into dataset statistics (see module docstring)."""
    if not episode_stats:
        return {}
    aggregated = {}
    for key in episode_stats[0]:
        parts = [s[key] for s in episode_stats if key in s]
        counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
        weights = (counts / counts.sum()).reshape(-1, *[1] * parts[0]["mean"].ndim)
        means = np.stack([p["mean"] for p in parts])
        mean = (weights * means).sum(axis=0)
        variance = (weights * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
        aggregated[key] = {
            "min": np.stack([p["min"] for p in parts]).min(axis=0),
            "max": np.stack([p["max"] for p in parts]).max(axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": np.array([int(counts.sum())]),
        }
        for name in QUANTILES:
            if all(name in p for p in parts):
                aggregated[key][name] = (weights * np.stack([p[name] for p in parts])).sum(axis=0)
    return aggregated


def stats_to_json(stats: Stats) -> dict:
    return {key: {name: np.asarray(v).tolist() for name, v in s.items()} for key, s in stats.items()}


def stats_from_json(data: dict) -> Stats:
    return {key: {name: np.asarray(v) for name, v in s.items()} for key, s in data.items()}
