"""Tiny real datasets written by policylab's own writer (no mocks), for tests across the suite."""

from pathlib import Path

import numpy as np

from policylab.datasets import LeRobotDatasetWriter

TASK = "Push the T-shaped block onto the T-shaped target."
FEATURES = {
    "observation.image": {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
}


def synthetic_episode(length: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth images (codec-friendly) and random vectors; frame t is recognisable by its values."""
    rng = np.random.default_rng(seed)
    ramp = np.arange(96, dtype=np.int64)
    images = np.empty((length, 96, 96, 3), dtype=np.uint8)
    for t in range(length):
        images[t, ..., 0] = (ramp[None, :] * 2 + 8 * t) % 256
        images[t, ..., 1] = (ramp[:, None] * 2) % 256
        images[t, ..., 2] = (40 * seed) % 256
    return {
        "observation.image": images,
        "observation.state": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "action": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "next.reward": rng.uniform(0, 1, length).astype(np.float32),
        "next.success": np.arange(length) == length - 1,
    }


def write_synthetic_dataset(root: Path, lengths=(5, 12, 8), codebase_version="v3.0") -> list[dict]:
    writer = LeRobotDatasetWriter(root, fps=10, features=FEATURES, codebase_version=codebase_version)
    episodes = [synthetic_episode(n, seed) for seed, n in enumerate(lengths)]
    for episode in episodes:
        writer.add_episode(episode, TASK)
    return episodes
