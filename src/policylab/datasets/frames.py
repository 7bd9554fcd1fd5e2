"""Loading frames into memory once: numeric columns as numpy arrays, camera frames as a uint8 frame cache.

Training never decodes video per sample. Each camera's frames are decoded once, episode by episode, into a
uint8 (N, C, H, W) array saved as a memory-mapped `.npy` under `<root>/.cache/policylab/` (or kept in
memory when the dataset folder is read-only); windows are then gathered by index. The cache file's name
carries a fingerprint of the files it was built from, so a changed dataset rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policylab.constants import EPISODE_INDEX
from policylab.datasets.errors import DatasetError
from policylab.datasets.layout import EpisodeRecord, default_data_home, read_parquet
from policylab.datasets.metadata import LeRobotDatasetMetadata
from policylab.datasets.parquet import column_to_numpy
from policylab.datasets.video import iter_video_frames

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
            _check_finite(pieces[record.episode_index], path, record.episode_index)
    return {key: np.concatenate([pieces[r.episode_index][key] for r in episodes]) for key in keys}


def _check_finite(columns: dict[str, np.ndarray], path: Path, episode_index: int) -> None:
    """Float columns must hold numbers: a NaN or inf would train silently into a broken policy."""
    for key, values in columns.items():
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)  # (N,) frames with a NaN or inf
        if bad.any():
            frame = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{path}: column '{key}' of episode {episode_index} holds {values[frame].tolist()} at frame "
                f"{frame} ({int(bad.sum())} frames with NaN or inf); fix or drop that episode (--dataset.episodes)"
            )


def load_camera_frames(meta: LeRobotDatasetMetadata, key: str) -> np.ndarray:
    """uint8 (total_frames, C, H, W) frames of camera `key`, row = dataset frame index (memory-mapped).

    The cache lives in `<root>/.cache/policylab/`, or under `$POLICYLAB_HOME/.frame_cache/` when the dataset
    folder is read-only (named by the fingerprint there, since many datasets share that folder).
    """
    height, width, channels = _hwc_shape(meta, key)
    shape = (meta.total_frames, channels, height, width)
    fingerprint = _fingerprint(meta, key)
    for cache_dir, name in [
        (meta.root / CACHE_DIR, f"{key}-{fingerprint}.npy"),
        (default_data_home() / ".frame_cache", f"{fingerprint}-{key}.npy"),
    ]:
        path = cache_dir / name
        if path.is_file():
            return _map_cache(path)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".{name}.{os.getpid()}.tmp"
            frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            break
        except OSError:  # read-only: try the next place
            continue
    else:
        raise DatasetError(
            f"{meta.root}: no writable place for the frame cache of '{key}' (tried {CACHE_DIR})"
        )
    try:
        _decode_into(meta, key, frames)
    except BaseException:
        del frames
        tmp.unlink()  # a half-built cache is never left behind
        raise
    frames.flush()
    del frames
    for stale in cache_dir.glob(f"{key}-*.npy") if cache_dir == meta.root / CACHE_DIR else []:
        stale.unlink()
    os.replace(tmp, path)
    return _map_cache(path)


def _map_cache(path: Path) -> np.ndarray:
    """Memory-map a cache file read-only; pre-fault it (MAP_POPULATE) when it fits easily in free memory.

    Random windows touch pages all over the file; faulting them in one by one during training costs more
    than the gather itself (benchmarks/RESULTS.md, "Dataloader").
    """
    lazy = np.load(path, mmap_mode="r")
    free_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if not hasattr(mmap, "MAP_POPULATE") or lazy.nbytes > free_bytes // 2:
        return lazy
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
    return np.frombuffer(mapped, dtype=np.uint8, offset=lazy.offset).reshape(lazy.shape)


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
    """Fill `frames` (N, C, H, W) with every episode of camera `key`, decoding each file once, streaming."""
    by_file: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in meta.episodes:
        by_file[
            record.video_files[key] if meta.features[key]["dtype"] == "video" else record.data_file
        ].append(record)
    progress = tqdm(total=meta.total_episodes, desc=f"frame cache {key}", unit="episode", leave=False)
    try:
        for file, records in by_file.items():
            if meta.features[key]["dtype"] == "video":
                _decode_video_file(meta, key, meta.root / file, records, frames)
            else:  # PNG bytes inside the parquet file
                images = load_columns(meta, records, [key])[key]  # (n, H, W, C)
                rows = np.concatenate([np.arange(r.dataset_from_index, r.dataset_to_index) for r in records])
                _check_frame_shape(images[0], frames, meta.root / file, key)
                frames[rows] = images.transpose(0, 3, 1, 2)
            progress.update(len(records))
    except DatasetError:
        progress.leave = True  # the bar ends with a newline, so the error is printed on a line of its own
        raise
    finally:
        progress.close()


def _decode_video_file(
    meta: LeRobotDatasetMetadata, key: str, path: Path, records: list[EpisodeRecord], frames: np.ndarray
) -> None:
    """Write the frames of `records`, which share the video file `path`, into their dataset rows.

    An episode occupies [from_timestamp, from_timestamp + length / fps) of the file; frame k of it is the
    one shown at from_timestamp + k / fps (LeRobot v3.0 packs episodes one after another in a file).
    """
    records = sorted(records, key=lambda r: r.video_from_timestamp[key])
    starts = np.array([r.video_from_timestamp[key] for r in records])
    filled = np.zeros(len(records), dtype=np.int64)
    for time, image in iter_video_frames(path):
        j = int(np.searchsorted(starts, time + 0.5 / meta.fps, side="right")) - 1
        k = round((time - starts[j]) * meta.fps) if j >= 0 else -1
        if 0 <= k < records[j].length:
            _check_frame_shape(image, frames, path, key)
            frames[records[j].dataset_from_index + k] = image.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
            filled[j] += 1
    for record, count in zip(records, filled, strict=True):
        if count != record.length:
            raise DatasetError(
                f"{path}: episode {record.episode_index} should have {record.length} frames from "
                f"t={record.video_from_timestamp[key]:.3f}s at {meta.fps} fps, the video has {count}"
            )


def _check_frame_shape(image: np.ndarray, frames: np.ndarray, path: Path, key: str) -> None:
    if (image.shape[2], image.shape[0], image.shape[1]) != frames.shape[1:]:
        raise DatasetError(
            f"{path}: '{key}' frames are {image.shape} (H, W, C), meta/info.json says {frames.shape[1:]} (C, H, W)"
        )
