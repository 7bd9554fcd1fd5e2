"""`LeRobotDatasetWriter`: append whole episodes to a LeRobot-format dataset, each one atomically.

Commit order of an episode: its video and data files (each written to a temporary name, then renamed),
then the episode and task tables and `meta/stats.json`, and `meta/info.json` last. `info.json`'s
`total_episodes` is the commit point: readers use only the episodes it counts, and reopening a dataset
deletes files and rows of an episode whose commit did not finish. SIGINT and SIGTERM that arrive during a
commit are held until it ends, so Ctrl-C or a kill leaves a valid dataset of the complete episodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from policylab.constants import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK_INDEX, TIMESTAMP
from policylab.datasets.errors import DatasetError
from policylab.datasets.layout import (
    DEFAULT_FEATURES,
    INFO_PATH,
    STATS_PATH,
    EpisodeRecord,
    new_episode_record,
    new_info,
    read_episodes,
    read_info,
    read_tasks,
    update_totals,
    write_episodes,
    write_tasks,
)
from policylab.datasets.parquet import columns_to_table
from policylab.datasets.stats import aggregate_stats, compute_episode_stats, stats_to_json
from policylab.datasets.video import encode_video, video_info
from policylab.utils.files import write_atomic, write_json
from policylab.utils.interrupts import deferred_interrupts


class LeRobotDatasetWriter:
    """Writes a new dataset in `root`, or appends to the one there (resuming after its last complete episode).

    features: LeRobot feature specs of the recorded signals, e.g.
        {"observation.image": {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channels"]},
         "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]}}
    The bookkeeping columns (timestamp, frame_index, episode_index, index, task_index) are added here.
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        features: dict[str, dict],
        codebase_version: str = "v3.0",
        robot_type: str | None = None,
    ):
        self.root = Path(root)
        if (self.root / INFO_PATH).exists():
            self.info = read_info(self.root)
            if self.info["codebase_version"] != codebase_version:
                raise DatasetError(
                    f"{self.root}: holds a {self.info['codebase_version']} dataset; cannot append as {codebase_version}"
                )
            self._check_compatible(fps, features)
            self.episodes = read_episodes(self.root, self.info)
            self.tasks = read_tasks(self.root, self.info) if self.episodes else []
            self._remove_uncommitted_files()
        else:
            images = [k for k, f in features.items() if f["dtype"] == "image"]
            if images:
                raise DatasetError(
                    f"features {images}: policylab writes cameras as 'video' (LeRobot's default), not 'image'"
                )
            self.info = new_info(codebase_version, fps, features, robot_type)
            self.episodes, self.tasks = [], []
            try:
                (self.root / "meta").mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatasetError(
                    f"{self.root}: cannot create the dataset folder ({error.strerror})"
                ) from None

    @staticmethod
    def count_committed(root: str | Path) -> int:
        """Episodes committed in `root` (0 when nothing is there yet)."""
        info = Path(root) / INFO_PATH
        return read_info(Path(root))["total_episodes"] if info.is_file() else 0

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def _check_compatible(self, fps: int, features: dict[str, dict]) -> None:
        existing = {k: v for k, v in self.info["features"].items() if k not in DEFAULT_FEATURES}
        if self.info["fps"] != fps or {k: (v["dtype"], list(v["shape"])) for k, v in existing.items()} != {
            k: (v["dtype"], list(v["shape"])) for k, v in features.items()
        }:
            raise DatasetError(
                f"{self.root}: a dataset with other features or fps is already there "
                f"(fps {self.info['fps']}, features {sorted(existing)}); choose another root"
            )

    def _remove_uncommitted_files(self) -> None:
        """Delete data/video files and temporaries that no committed episode refers to."""
        referenced = {self.root / e.data_file for e in self.episodes}
        referenced |= {self.root / f for e in self.episodes for f in e.video_files.values()}
        for folder in ("data", "videos", "meta"):
            for path in (self.root / folder).rglob("*"):
                stray_file = (
                    path.suffix in (".parquet", ".mp4") and folder != "meta" and path not in referenced
                )
                if path.is_file() and (stray_file or path.name.endswith(".tmp")):
                    path.unlink()

    def add_episode(self, frames: dict[str, np.ndarray], task: str) -> EpisodeRecord:
        """Append one episode: `frames` maps every feature to an array with one row per frame."""
        length = self._check_episode(frames)
        episode_index, start = self.num_episodes, self.num_frames
        tasks = self.tasks if task in self.tasks else [*self.tasks, task]  # committed with the episode
        columns = {
            **{k: np.asarray(v) for k, v in frames.items()},
            TIMESTAMP: np.arange(length, dtype=np.float32) / self.info["fps"],
            FRAME_INDEX: np.arange(length, dtype=np.int64),
            EPISODE_INDEX: np.full(length, episode_index, dtype=np.int64),
            INDEX: np.arange(start, start + length, dtype=np.int64),
            TASK_INDEX: np.full(length, tasks.index(task), dtype=np.int64),
        }
        record = new_episode_record(self.info, episode_index, length, [task], start)
        record.stats = compute_episode_stats(columns, self.info["features"])
        for key, path in record.video_files.items():
            self._set_video_info(key, columns[key].shape)
            write_atomic(
                self.root / path, lambda tmp, key=key: encode_video(columns[key], tmp, self.info["fps"])
            )
        table = columns_to_table(columns, self.info["features"], self.info["codebase_version"])
        with deferred_interrupts():
            write_atomic(self.root / record.data_file, lambda tmp: pq.write_table(table, tmp))
            self.episodes.append(record)
            self.tasks = tasks
            self._commit_metadata()
        return record

    def _check_episode(self, frames: dict[str, np.ndarray]) -> int:
        """Every feature present with its declared shape and a matching dtype; returns the episode length."""
        features = {k: v for k, v in self.info["features"].items() if k not in DEFAULT_FEATURES}
        missing, unknown = set(features) - set(frames), set(frames) - set(features)
        if missing or unknown:
            raise DatasetError(
                f"episode features do not match the dataset's: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        lengths = {k: len(v) for k, v in frames.items()}
        length = next(iter(lengths.values()))
        if length == 0 or any(n != length for n in lengths.values()):
            raise DatasetError(f"episode frames must be non-empty and equally long, got {lengths}")
        for key, feature in features.items():
            values = np.asarray(frames[key])
            shape = [int(d) for d in feature["shape"]]
            expected = (length, *shape) if shape != [1] else (length,)
            if values.shape not in (expected, (length, *shape)):
                raise DatasetError(f"episode feature '{key}' has shape {values.shape}, expected {expected}")
            if feature["dtype"] == "video" and values.dtype != np.uint8:
                raise DatasetError(
                    f"episode feature '{key}' must be uint8 (N, H, W, 3) frames, got {values.dtype}"
                )
            if feature["dtype"] == "bool" and values.dtype != np.bool_:
                raise DatasetError(f"episode feature '{key}' must be bool, got {values.dtype}")
        return length

    def _set_video_info(self, key: str, shape: tuple[int, ...]) -> None:
        self.info["features"][key]["info"] = video_info(
            shape, self.info["fps"], self.info["codebase_version"]
        )

    def _commit_metadata(self) -> None:
        write_episodes(self.root, self.info, self.episodes)
        write_tasks(self.root, self.info, self.tasks)
        write_json(
            self.root / STATS_PATH, stats_to_json(aggregate_stats([e.stats for e in self.episodes])), indent=4
        )
        self.info = update_totals(self.info, self.episodes, self.tasks)
        write_json(self.root / INFO_PATH, self.info, indent=4)
