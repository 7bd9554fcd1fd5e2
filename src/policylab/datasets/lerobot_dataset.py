"""`LeRobotDataset`: a torch Dataset over a LeRobot-format dataset, with temporal windows and padding masks.

Every value of an item is a tensor: images float32 (C, H, W) in [0, 1], vectors (D,), scalars (); a key
given in `delta_timestamps` gets a leading time axis (K, ...) and a `<key>_is_pad` (K,) bool mask.
Items are gathered from in-memory columns and a uint8 frame cache (see `frames.py`); `__getitems__` gathers
a whole batch with one indexing operation per key, which torch's DataLoader uses automatically.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch

from policylab.constants import PAD_SUFFIX, TIMESTAMP
from policylab.datasets.errors import DatasetError
from policylab.datasets.frames import load_camera_frames, load_columns
from policylab.datasets.layout import INFO_PATH, default_data_home
from policylab.datasets.metadata import LeRobotDatasetMetadata, stats_as_tensors
from policylab.datasets.stats import aggregate_stats, is_visual
from policylab.datasets.windows import delta_timestamps_to_offsets, window_indices


def resolve_dataset_root(repo_id: str | None, root: str | Path | None) -> Path:
    """The dataset folder: `root/repo_id` (root defaults to the data home), `root` itself when repo_id is None.

    A `repo_id` that is not there locally is downloaded from the Hugging Face hub into `root/repo_id`.
    """
    if repo_id is None:
        if root is None:
            raise DatasetError("give a dataset repo_id, a root folder, or both")
        if not (Path(root) / INFO_PATH).is_file():
            raise DatasetError(f"no LeRobot dataset in {root} ({INFO_PATH} is missing)")
        return Path(root)
    folder = Path(root if root is not None else default_data_home()) / repo_id
    if (folder / INFO_PATH).is_file():
        return folder
    if root is not None and (Path(root) / INFO_PATH).is_file():
        raise DatasetError(
            f"{root} is itself a dataset folder, and repo_id '{repo_id}' is looked up under it ({folder}); "
            f"pass repo_id=None (--dataset.root alone) to use {root}"
        )
    return _download_from_hub(repo_id, folder)


def _download_from_hub(repo_id: str, target: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        snapshot_download(repo_id, repo_type="dataset", local_dir=target, etag_timeout=5)
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as error:
        raise DatasetError(
            f"dataset '{repo_id}' was not found locally (searched {target}) and could not be downloaded "
            f"from the Hugging Face hub ({type(error).__name__}). Record one with `policylab record "
            f"--dataset.repo_id={repo_id}`, or set $POLICYLAB_HOME to the folder that holds '{repo_id}'."
        ) from error
    if not (target / INFO_PATH).is_file():
        raise DatasetError(f"downloaded '{repo_id}' to {target}, but it has no {INFO_PATH}")
    return target


def _is_file_backed(array: np.ndarray) -> bool:
    """True for frames mapped from the cache file (np.memmap, or np.frombuffer over an mmap)."""
    while isinstance(array, np.ndarray) and not isinstance(array, np.memmap):
        array = array.base
    if isinstance(array, memoryview):
        array = array.obj
    return isinstance(array, (np.memmap, mmap.mmap))


class LeRobotDataset(torch.utils.data.Dataset):
    """Frames of a LeRobot-format dataset (v3.0 or v2.1) as dicts of tensors.

    Args:
        repo_id: dataset name, looked up under `root` or the data home (see `resolve_dataset_root`).
        root: folder holding `repo_id`, or the dataset folder itself.
        delta_timestamps: key -> time offsets in seconds, e.g. {"action": [0.0, 0.1, ...]}; each must be a
            multiple of 1/fps (within `tolerance_s`).
        episodes: episode indices to use (default all).
        cameras: camera features to load (default all). Video is decoded (once, into the frame cache) only
            for these, and only these appear in items; `cameras=[]` reads no video at all.
    """

    def __init__(
        self,
        repo_id: str | None = None,
        root: str | Path | None = None,
        delta_timestamps: dict[str, list[float]] | None = None,
        episodes: list[int] | None = None,
        tolerance_s: float = 1e-4,
        cameras: list[str] | None = None,
    ):
        self.repo_id = repo_id
        self.root = resolve_dataset_root(repo_id, root)
        self.meta = LeRobotDatasetMetadata(self.root)
        self.delta_timestamps = delta_timestamps
        self.tolerance_s = tolerance_s
        self.episodes = self._select_episodes(episodes)
        self._offsets = delta_timestamps_to_offsets(
            delta_timestamps or {}, self.fps, self.features, tolerance_s
        )

        numeric_keys = [k for k, f in self.features.items() if not is_visual(f) and f["dtype"] != "string"]
        self._columns = load_columns(self.meta, self.episodes, numeric_keys)
        self._cameras = {key: load_camera_frames(self.meta, key) for key in self._select_cameras(cameras)}
        self._served: dict[str, tuple[str, np.ndarray]] = {}  # camera -> (name, values by position)
        lengths = np.array([e.length for e in self.episodes])
        ends = np.cumsum(lengths)
        self._episode_start = np.repeat(
            ends - lengths, lengths
        )  # (N,) first position of each frame's episode
        self._episode_end = np.repeat(ends, lengths)  # (N,) one past its last position
        self._camera_rows = np.concatenate(
            [np.arange(e.dataset_from_index, e.dataset_to_index) for e in self.episodes]
        )
        self._check_timestamps()

    def _select_cameras(self, cameras: list[str] | None) -> list[str]:
        if cameras is None:
            return list(self.meta.camera_keys)
        unknown = sorted(set(cameras) - set(self.meta.camera_keys))
        if unknown:
            raise DatasetError(
                f"{self.root}: no camera features {unknown}; its cameras: {list(self.meta.camera_keys) or 'none'}"
            )
        return list(cameras)

    def _select_episodes(self, episodes: list[int] | None):
        if episodes is None:
            if not self.meta.episodes:
                raise DatasetError(f"{self.root}: the dataset has no episodes yet")
            return list(self.meta.episodes)
        if not episodes:
            raise DatasetError(
                f"{self.root}: `episodes` is empty; pass None for all episodes or some indices"
            )
        known = {e.episode_index: e for e in self.meta.episodes}
        unknown = [i for i in episodes if i not in known]
        if unknown:
            raise DatasetError(
                f"{self.root}: episodes {unknown} do not exist (0..{self.meta.total_episodes - 1})"
            )
        return [known[i] for i in sorted(set(episodes))]

    def _check_timestamps(self) -> None:
        """Timestamps must advance by 1/fps within each episode, or windows would pick the wrong frames."""
        timestamps = self._columns.get(TIMESTAMP)
        if timestamps is None:
            return
        start = 0
        for record in self.episodes:
            steps = np.diff(timestamps[start : start + record.length].astype(np.float64))
            if np.any(np.abs(steps - 1 / self.fps) > self.tolerance_s):
                raise DatasetError(
                    f"{self.root / record.data_file}: episode {record.episode_index} timestamps do not advance "
                    f"by 1/fps = {1 / self.fps:g} s"
                )
            start += record.length

    def __getstate__(self) -> dict:
        """Pickle (for spawned DataLoader workers) without the frames: memory-mapped caches are reopened."""
        state = dict(self.__dict__)
        state["_cameras"] = {k: None if _is_file_backed(v) else v for k, v in self._cameras.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cameras = {
            k: v if v is not None else load_camera_frames(self.meta, k) for k, v in self._cameras.items()
        }

    # -- what users ask of a dataset ---------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Normalization statistics of the episodes this dataset uses (`meta.stats` when it uses them all, or
        when an episode has no statistics of its own)."""
        if len(self.episodes) == self.meta.total_episodes or not all(e.stats for e in self.episodes):
            return self.meta.stats
        return stats_as_tensors(aggregate_stats([e.stats for e in self.episodes]))

    @property
    def num_frames(self) -> int:
        return len(self._episode_start)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def __len__(self) -> int:
        return self.num_frames

    def frame_positions(self, drop_last: int = 0) -> np.ndarray:
        """Positions 0..len-1 of the frames, without the last `drop_last` frames of each episode."""
        positions = np.arange(len(self))
        return positions[positions < self._episode_end - drop_last]

    def camera_frames(self, key: str, positions: np.ndarray) -> torch.Tensor:
        """The stored frames of camera `key` at `positions` (N,), uint8 (N, C, H, W), without windows."""
        return torch.from_numpy(self._cameras[key][self._camera_rows[positions]])

    def serve_in_place_of(self, key: str, name: str, values: np.ndarray) -> None:
        """Items carry `name`: values (len(self), ...), one per frame position, in place of camera `key`'s
        frames (e.g. features computed once from them), windowed and padded as the frames were."""
        if len(values) != len(self):
            raise ValueError(f"{name}: {len(values)} values for a dataset of {len(self)} frames")
        self._served[key] = (name, values)
        del self._cameras[key]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.gather(np.array([index]))
        return {key: value[0] for key, value in batch.items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.gather(np.asarray(indices))
        return [{key: value[i] for key, value in batch.items()} for i in range(len(indices))]

    def gather(self, positions: np.ndarray, scale_images: bool = True) -> dict[str, torch.Tensor]:
        """A batch of items at `positions` (B,) (negative counts from the end), values with a leading batch axis.

        scale_images: camera frames as float32 in [0, 1] (as items give them), or False: as stored, uint8, for a
            caller that scales them later (the training stream: a quarter of the bytes between processes).
        """
        positions = np.asarray(positions, dtype=np.int64)
        outside = (positions < -len(self)) | (positions >= len(self))
        if outside.any():
            raise IndexError(
                f"frame {positions[outside][0]} is out of range for a dataset of {len(self)} frames"
            )
        positions = positions % len(self)
        start, end = self._episode_start[positions], self._episode_end[positions]
        batch = {}
        for key in [*self._columns, *self._cameras, *self._served]:
            rows, offsets = positions, self._offsets.get(key)
            if offsets is not None:
                rows, is_pad = window_indices(positions, offsets, start, end)  # (B, K)
                batch[key + PAD_SUFFIX] = torch.from_numpy(is_pad)
            if key in self._served:
                name, values = self._served[key]
                batch[name] = torch.from_numpy(values[rows])  # (B, [K,] ...)
            elif key in self._cameras:
                frames = self._cameras[key][self._camera_rows[rows]]  # uint8 (B, [K,] C, H, W)
                frames = torch.from_numpy(frames)
                batch[key] = scale_frames(frames) if scale_images else frames
            else:
                batch[key] = torch.from_numpy(self._columns[key][rows])
        return batch

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(root='{self.root}', episodes={self.num_episodes}, frames={self.num_frames}, "
            f"fps={self.fps}, windows={ {k: len(v) for k, v in self._offsets.items()} })"
        )


def scale_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 camera frames -> float32 in [0, 1], on the frames' device (mul: ~8x faster than div_ on CPU)."""
    return frames.to(torch.float32).mul_(1 / 255)
