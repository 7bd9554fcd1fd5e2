"""Loading frames into memory once: numeric columns as numpy arrays, camera frames as a uint8 frame cache.

Training never decodes video per sample. Each camera's frames are decoded once, episode by episode, into a
uint8 (N, C, H, W) array saved as a memory-mapped `.npy` under `<root>/.cache/policylab/` (or kept in
memory when the dataset folder is read-only); windows are then gathered by index. The cache file's name
carries a fingerprint of the files it was built from, so a changed dataset rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict

import numpy as np
from tqdm.auto import tqdm

from policylab.constants import EPISODE_INDEX
from policylab.datasets.errors import DatasetError
from policylab.datasets.layout import EpisodeRecord, read_parquet
from policylab.datasets.metadata import LeRobotDatasetMetadata
from policylab.datasets.parquet import column_to_numpy
from policylab.datasets.video import decode_video, select_episode_frames

CACHE_DIR = ".cache/policylab"


def load_columns(
    meta: LeRobotDatasetMetadata, episodes: list[EpisodeRecord], keys: list[str]
) -> dict[str, np.ndarray]:
    """Columns `keys` of `episodes`, concatenated in that order: key -> (sum of lengths, *shape)."""
    by_file: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in episodes:
        by_file[record.data_file].append(record)
    pieces: dict[int, dict[str, np.ndarray]] = {}
    for data_file, records in by_file.items():
        path = meta.root / data_file
        table = read_parquet(path)
        if EPISODE_INDEX not in table.column_names:
            raise DatasetError(f"{path}: column '{EPISODE_INDEX}' is missing")
        episode_of_row = table.column(EPISODE_INDEX).to_numpy()
        columns = {key: column_to_numpy(table, key, meta.features[key], path) for key in keys}
        for record in records:
            rows = np.flatnonzero(episode_of_row == record.episode_index)
            if len(rows) != record.length:
                raise DatasetError(
                    f"{path}: episode {record.episode_index} has {len(rows)} rows, its metadata says {record.length}"
                )
            pieces[record.episode_index] = {key: values[rows] for key, values in columns.items()}
    return {key: np.concatenate([pieces[r.episode_index][key] for r in episodes]) for key in keys}


def load_camera_frames(meta: LeRobotDatasetMetadata, key: str) -> np.ndarray:
    """uint8 (total_frames, C, H, W) frames of camera `key`, row = dataset frame index (memory-mapped)."""
    height, width, channels = _hwc_shape(meta, key)
    shape = (meta.total_frames, channels, height, width)
    cache_dir = meta.root / CACHE_DIR
    path = cache_dir / f"{key}-{_fingerprint(meta, key)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{path.name}.{os.getpid()}.tmp"
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    except OSError:  # read-only dataset folder: keep the decoded frames in memory instead
        frames, tmp = np.empty(shape, dtype=np.uint8), None
    _decode_into(meta, key, frames)
    if tmp is None:
        return frames
    frames.flush()
    del frames
    for stale in cache_dir.glob(f"{key}-*.npy"):
        stale.unlink()
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _hwc_shape(meta: LeRobotDatasetMetadata, key: str) -> tuple[int, int, int]:
    feature = meta.features[key]
    shape = list(feature["shape"])
    names = feature.get("names") or []
    if len(shape) != 3:
        raise DatasetError(f"{meta.root}/meta/info.json: camera '{key}' has shape {shape}, expected 3 dims")
    if list(names)[:1] == ["channels"] or shape[0] in (1, 3) and shape[2] not in (1, 3):
        return shape[1], shape[2], shape[0]  # stored as (C, H, W)
    return shape[0], shape[1], shape[2]


def _fingerprint(meta: LeRobotDatasetMetadata, key: str) -> str:
    files = sorted({meta.root / (e.video_files.get(key) or e.data_file) for e in meta.episodes})
    sources = [
        (str(f.relative_to(meta.root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()
    ]
    spec = json.dumps([meta.features[key], meta.total_frames, sources], sort_keys=True, default=str)
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def _decode_into(meta: LeRobotDatasetMetadata, key: str, frames: np.ndarray) -> None:
    """Fill `frames` (N, C, H, W) with every episode of camera `key`, decoding each video file once."""
    with tqdm(total=meta.total_episodes, desc=f"frame cache {key}", unit="episode", leave=False) as progress:
        for path, episodes in _episode_frames(meta, key):
            for record, hwc in episodes:
                chw = hwc.transpose(0, 3, 1, 2)  # (n, H, W, C) -> (n, C, H, W)
                if chw.shape[1:] != frames.shape[1:]:
                    raise DatasetError(
                        f"{path}: '{key}' frames are {chw.shape[1:]} (C, H, W), info.json says {frames.shape[1:]}"
                    )
                frames[record.dataset_from_index : record.dataset_to_index] = chw
                progress.update()


def _episode_frames(meta: LeRobotDatasetMetadata, key: str):
    """Yield (file, [(episode record, (n, H, W, C) uint8 frames)]) per video file, or per data file for images."""
    if meta.features[key]["dtype"] == "image":  # PNG bytes inside the parquet files
        for record in meta.episodes:
            yield meta.root / record.data_file, [(record, load_columns(meta, [record], [key])[key])]
        return
    by_file: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in meta.episodes:
        by_file[record.video_files[key]].append(record)
    for file, records in by_file.items():
        path = meta.root / file
        decoded, times = decode_video(path)
        yield (
            path,
            [
                (
                    r,
                    select_episode_frames(
                        decoded, times, r.video_from_timestamp[key], r.length, meta.fps, path
                    ),
                )
                for r in records
            ],
        )
