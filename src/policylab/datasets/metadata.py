"""`LeRobotDatasetMetadata`: what a dataset holds (info, episodes, tasks, statistics), without its frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policylab.datasets.layout import STATS_PATH, read_episodes, read_info, read_json, read_tasks, video_keys
from policylab.datasets.stats import Stats, aggregate_stats, is_visual, stats_from_json


def stats_as_tensors(stats: Stats) -> dict[str, dict[str, torch.Tensor]]:
    return {
        key: {name: torch.as_tensor(v, dtype=torch.float32) for name, v in s.items()}
        for key, s in stats.items()
    }


class LeRobotDatasetMetadata:
    """Metadata of the LeRobot-format dataset in `root` (v3.0 or v2.1)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.episodes = read_episodes(self.root, self.info)
        self.tasks = read_tasks(self.root, self.info)
        self.stats = stats_as_tensors(self._numpy_stats())

    def _numpy_stats(self) -> Stats:
        """As LeRobot: v2.1 aggregates the per-episode statistics (a stats.json there may predate them);
        v3.0 reads meta/stats.json unless it counts other frames than the committed episodes hold (a write
        interrupted between stats.json and info.json), in which case it aggregates the episodes' too."""
        episode_stats = [e.stats for e in self.episodes if e.stats]
        path = self.root / STATS_PATH
        if self.codebase_version == "v3.0" and path.is_file():
            stats = stats_from_json(read_json(path))
            counts = {int(np.asarray(s["count"]).reshape(-1)[0]) for s in stats.values() if "count" in s}
            if counts <= {self.total_frames} or not episode_stats:
                return stats
        return aggregate_stats(episode_stats)

    @property
    def codebase_version(self) -> str:
        return self.info["codebase_version"]

    @property
    def fps(self) -> int:
        return self.info["fps"]

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def total_episodes(self) -> int:
        return self.info["total_episodes"]

    @property
    def total_frames(self) -> int:
        return self.info["total_frames"]

    @property
    def video_keys(self) -> list[str]:
        return video_keys(self.info)

    @property
    def camera_keys(self) -> list[str]:
        """Video and image features alike."""
        return [k for k, f in self.features.items() if is_visual(f)]

    def __repr__(self) -> str:
        return (
            f"LeRobotDatasetMetadata(root='{self.root}', codebase_version={self.codebase_version}, fps={self.fps}, "
            f"episodes={self.total_episodes}, frames={self.total_frames}, features={list(self.features)})"
        )
