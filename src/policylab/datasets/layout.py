"""LeRobot's on-disk layouts, v3.0 and v2.1: `meta/info.json`, episode and task tables, file paths.

    v3.0                                            v2.1
    meta/info.json, meta/stats.json                 meta/info.json, meta/stats.json
    meta/tasks.parquet (index: task)                meta/tasks.jsonl
    meta/episodes/chunk-000/file-000.parquet        meta/episodes.jsonl, meta/episodes_stats.jsonl
      (one row per episode: length, index range,
       data/video file, video time span, stats/*)
    data/chunk-XXX/file-XXX.parquet                 data/chunk-XXX/episode_XXXXXX.parquet
    videos/<key>/chunk-XXX/file-XXX.mp4             videos/chunk-XXX/<key>/episode_XXXXXX.mp4

In v3.0 a data or video file may hold many episodes (LeRobot packs them); policylab reads that, and writes
one file per episode, which is also valid v3.0 and makes each episode an atomic unit on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policylab.constants import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK_INDEX, TIMESTAMP
from policylab.datasets.errors import DatasetError
from policylab.datasets.stats import Stats, stats_from_json, stats_to_json
from policylab.utils.files import write_atomic

CODEBASE_VERSIONS = ("v3.0", "v2.1")
CHUNKS_SIZE = 1000
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"

# Columns every LeRobot dataset has besides its own features.
DEFAULT_FEATURES = {
    TIMESTAMP: {"dtype": "float32", "shape": [1], "names": None},
    FRAME_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    EPISODE_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    INDEX: {"dtype": "int64", "shape": [1], "names": None},
    TASK_INDEX: {"dtype": "int64", "shape": [1], "names": None},
}

PATH_TEMPLATES = {
    "v3.0": (
        "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
    ),
    "v2.1": (
        "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
    ),
}


@dataclass
class EpisodeRecord:
    """Where one episode lives: its frame range in the dataset, its data file and its video spans."""

    episode_index: int
    length: int
    tasks: list[str]
    dataset_from_index: int
    data_file: str  # relative to the dataset root
    video_files: dict[str, str] = field(default_factory=dict)  # video key -> relative path
    video_from_timestamp: dict[str, float] = field(default_factory=dict)
    # v3.0 (chunk_index, file_index) of the data and video files, written back as they were read
    data_location: tuple[int, int] = (0, 0)
    video_locations: dict[str, tuple[int, int]] = field(default_factory=dict)
    stats: Stats = field(default_factory=dict)

    @property
    def dataset_to_index(self) -> int:
        return self.dataset_from_index + self.length


def default_data_home() -> Path:
    """`$POLICYLAB_HOME`, else `~/.cache/policylab/datasets`."""
    return Path(os.environ.get("POLICYLAB_HOME") or Path.home() / ".cache/policylab/datasets")


# -- small atomic file helpers --------------------------------------------------------------------------


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_atomic(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))


def read_json(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON lines ({error})") from error


def read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from error


# -- info.json ------------------------------------------------------------------------------------------


def new_info(codebase_version: str, fps: int, features: dict, robot_type: str | None) -> dict:
    if codebase_version not in CODEBASE_VERSIONS:
        raise DatasetError(
            f"codebase_version '{codebase_version}' is not supported ({', '.join(CODEBASE_VERSIONS)})"
        )
    data_path, video_path = PATH_TEMPLATES[codebase_version]
    has_video = any(f["dtype"] == "video" for f in features.values())
    info = {
        "codebase_version": codebase_version,
        "robot_type": robot_type,
        "fps": fps,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "splits": {},
        "data_path": data_path,
        "video_path": video_path if has_video else None,
        "features": {**features, **DEFAULT_FEATURES},
    }
    if codebase_version == "v3.0":
        info.update(data_files_size_in_mb=100, video_files_size_in_mb=200)
    else:
        info.update(total_chunks=0, total_videos=0)
    return info


def read_info(root: Path) -> dict:
    """meta/info.json, checked for what policylab relies on."""
    path = root / INFO_PATH
    if not path.is_file():
        raise DatasetError(f"{root}: no {INFO_PATH}; is this a LeRobot dataset folder?")
    info = read_json(path)
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if version not in CODEBASE_VERSIONS:
        raise DatasetError(
            f"{path}: codebase_version '{version}' is not supported ({', '.join(CODEBASE_VERSIONS)})"
        )
    for key in ("fps", "features", "total_episodes", "total_frames", "data_path"):
        if key not in info:
            raise DatasetError(f"{path}: required field '{key}' is missing")
    if not isinstance(info["fps"], int) or info["fps"] <= 0:
        raise DatasetError(f"{path}: 'fps' must be a positive integer, got {info['fps']!r}")
    for key in ("total_episodes", "total_frames"):
        if not isinstance(info[key], int) or info[key] < 0:
            raise DatasetError(f"{path}: '{key}' must be a non-negative integer, got {info[key]!r}")
    if not isinstance(info["features"], dict):
        raise DatasetError(f"{path}: 'features' must be an object of feature name -> spec")
    for name, feature in info["features"].items():
        if not isinstance(feature, dict) or "dtype" not in feature or "shape" not in feature:
            raise DatasetError(f"{path}: feature '{name}' needs a 'dtype' and a 'shape'")
        shape = feature["shape"]
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise DatasetError(
                f"{path}: feature '{name}' has shape {shape!r}, expected a list of positive integers"
            )
    if any(f["dtype"] == "video" for f in info["features"].values()) and not info.get("video_path"):
        raise DatasetError(f"{path}: video features are declared but 'video_path' is missing")
    return info


def update_totals(info: dict, episodes: list[EpisodeRecord], tasks: list[str]) -> dict:
    n_videos = sum(len(e.video_files) for e in episodes)
    info = {**info, "total_episodes": len(episodes), "total_frames": sum(e.length for e in episodes)}
    info.update(total_tasks=len(tasks), splits={"train": f"0:{len(episodes)}"})
    if info["codebase_version"] == "v2.1":
        info.update(
            total_videos=n_videos, total_chunks=(len(episodes) - 1) // CHUNKS_SIZE + 1 if episodes else 0
        )
    return info


def video_keys(info: dict) -> list[str]:
    return [k for k, f in info["features"].items() if f["dtype"] == "video"]


def new_episode_record(
    info: dict, episode_index: int, length: int, tasks: list[str], start: int
) -> EpisodeRecord:
    """Where an episode policylab writes goes: its own data and video files, (chunk, file) = divmod(index, chunks_size).

    Appending to a dataset that LeRobot packed cannot collide: its F files are numbered below its N >= F episodes.
    """
    location = divmod(episode_index, info.get("chunks_size", CHUNKS_SIZE))
    fields = dict(
        chunk_index=location[0],
        file_index=location[1],
        episode_chunk=location[0],
        episode_index=episode_index,
    )
    keys = video_keys(info)
    return EpisodeRecord(
        episode_index=episode_index,
        length=length,
        tasks=tasks,
        dataset_from_index=start,
        data_file=info["data_path"].format(**fields),
        video_files={k: info["video_path"].format(video_key=k, **fields) for k in keys},
        video_from_timestamp=dict.fromkeys(keys, 0.0),
        data_location=location,
        video_locations=dict.fromkeys(keys, location),
    )


# -- episode and task tables ----------------------------------------------------------------------------


def read_episodes(root: Path, info: dict) -> list[EpisodeRecord]:
    """Episode records of a dataset, in episode order, limited to the `total_episodes` committed in info."""
    records = (
        _read_episodes_v30(root, info)
        if info["codebase_version"] == "v3.0"
        else _read_episodes_v21(root, info)
    )
    records = sorted(records, key=lambda r: r.episode_index)[: info["total_episodes"]]
    if len(records) < info["total_episodes"]:
        raise DatasetError(
            f"{root}: meta/info.json lists {info['total_episodes']} episodes, metadata has {len(records)}"
        )
    frames = sum(r.length for r in records)
    if frames != info["total_frames"]:
        raise DatasetError(
            f"{root}: meta/info.json says total_frames={info['total_frames']}, its episodes hold {frames} frames"
        )
    return records


def _read_episodes_v30(root: Path, info: dict) -> list[EpisodeRecord]:
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root}: no episode metadata under meta/episodes/")
    keys = video_keys(info)
    required = ["episode_index", "length", "dataset_from_index", "data/chunk_index", "data/file_index"]
    required += [f"videos/{k}/{c}" for k in keys for c in ("chunk_index", "file_index", "from_timestamp")]
    records = {}
    for path in files:
        table = read_parquet(path)
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: episode metadata lacks column(s) {', '.join(missing)}")
        for row in table.to_pylist():
            stats: Stats = {}
            for column, value in row.items():
                if column.startswith("stats/") and value is not None:
                    key, stat = column[len("stats/") :].rsplit("/", 1)
                    stats.setdefault(key, {})[stat] = np.asarray(value)
            data_location = (row["data/chunk_index"], row["data/file_index"])
            video_locations = {
                k: (row[f"videos/{k}/chunk_index"], row[f"videos/{k}/file_index"]) for k in keys
            }
            # first file wins: a row repeated in a later file is a leftover of an interrupted rewrite
            records.setdefault(
                row["episode_index"],
                EpisodeRecord(
                    episode_index=row["episode_index"],
                    length=row["length"],
                    tasks=list(row.get("tasks") or []),
                    dataset_from_index=row["dataset_from_index"],
                    data_file=info["data_path"].format(
                        chunk_index=data_location[0], file_index=data_location[1]
                    ),
                    video_files={
                        k: info["video_path"].format(video_key=k, chunk_index=c, file_index=f)
                        for k, (c, f) in video_locations.items()
                    },
                    video_from_timestamp={k: row[f"videos/{k}/from_timestamp"] for k in keys},
                    stats=stats,
                    data_location=data_location,
                    video_locations=video_locations,
                ),
            )
    return list(records.values())


def _read_episodes_v21(root: Path, info: dict) -> list[EpisodeRecord]:
    rows = read_jsonl(root / "meta/episodes.jsonl")
    stats_path = root / "meta/episodes_stats.jsonl"
    stats = (
        {r["episode_index"]: stats_from_json(r["stats"]) for r in read_jsonl(stats_path)}
        if stats_path.exists()
        else {}
    )
    for row in rows:
        if not isinstance(row, dict) or not {"episode_index", "length"} <= set(row):
            raise DatasetError(
                f"{root / 'meta/episodes.jsonl'}: every line needs 'episode_index' and 'length': {row}"
            )
    records, start = [], 0
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        record = new_episode_record(
            info, row["episode_index"], row["length"], list(row.get("tasks", [])), start
        )
        record.stats = stats.get(row["episode_index"], {})
        records.append(record)
        start += row["length"]
    return records


def write_episodes(root: Path, info: dict, records: list[EpisodeRecord]) -> None:
    if info["codebase_version"] == "v2.1":
        write_jsonl_atomic(
            root / "meta/episodes.jsonl",
            [{"episode_index": r.episode_index, "tasks": r.tasks, "length": r.length} for r in records],
        )
        write_jsonl_atomic(
            root / "meta/episodes_stats.jsonl",
            [{"episode_index": r.episode_index, "stats": stats_to_json(r.stats)} for r in records],
        )
        return
    rows = []
    for r in records:
        row = {
            "episode_index": r.episode_index,
            "tasks": r.tasks,
            "length": r.length,
            "data/chunk_index": r.data_location[0],
            "data/file_index": r.data_location[1],
            "dataset_from_index": r.dataset_from_index,
            "dataset_to_index": r.dataset_to_index,
        }
        for key in r.video_files:
            row.update(
                {
                    f"videos/{key}/chunk_index": r.video_locations[key][0],
                    f"videos/{key}/file_index": r.video_locations[key][1],
                    f"videos/{key}/from_timestamp": r.video_from_timestamp[key],
                    f"videos/{key}/to_timestamp": r.video_from_timestamp[key] + r.length / info["fps"],
                }
            )
        for key, stats in r.stats.items():
            row.update({f"stats/{key}/{name}": np.asarray(v).tolist() for name, v in stats.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        rows.append(row)
    # all rows go to one file; files LeRobot split the table into are removed after it is in place
    episodes_file = root / "meta/episodes/chunk-000/file-000.parquet"
    write_atomic(episodes_file, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))
    for other in (root / "meta/episodes").glob("chunk-*/file-*.parquet"):
        if other != episodes_file:
            other.unlink()


def read_tasks(root: Path, info: dict) -> list[str]:
    """Task strings, position = task_index."""
    if info["codebase_version"] == "v2.1":
        rows = read_jsonl(root / "meta/tasks.jsonl")
        return [r["task"] for r in sorted(rows, key=lambda r: r["task_index"])]
    table = read_parquet(root / "meta/tasks.parquet")
    if not {"task", "task_index"} <= set(table.column_names):
        raise DatasetError(f"{root / 'meta/tasks.parquet'}: needs columns 'task' and 'task_index'")
    rows = sorted(table.select(["task", "task_index"]).to_pylist(), key=lambda r: r["task_index"])
    return [r["task"] for r in rows]


def write_tasks(root: Path, info: dict, tasks: list[str]) -> None:
    if info["codebase_version"] == "v2.1":
        write_jsonl_atomic(
            root / "meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)]
        )
        return
    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())}
    )
    # LeRobot reads this file with pandas and looks tasks up by the index: record 'task' as the pandas index.
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    write_atomic(root / "meta/tasks.parquet", lambda tmp: pq.write_table(table, tmp))
