"""`--dataset.*`: which LeRobot-format dataset a command reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policylab.datasets.lerobot_dataset import resolve_dataset_root


@dataclass
class DatasetConfig:
    """The demonstrations to read.

    repo_id: dataset name, looked up in --dataset.root, else in the data home ($POLICYLAB_HOME, else
        ~/.cache/policylab/datasets, where `policylab record` writes), else on the Hugging Face hub.
    root: folder holding repo_id, or (without repo_id) the dataset folder itself.
    episodes: episode indices to use (default all), e.g. [0,1,2].
    """

    repo_id: str | None = None
    root: str | None = None
    episodes: list[int] | None = None

    @property
    def given(self) -> bool:
        return self.repo_id is not None or self.root is not None

    def folder(self) -> Path:
        """The dataset folder these flags name (downloaded from the hub when it is not local)."""
        return resolve_dataset_root(self.repo_id, self.root)
