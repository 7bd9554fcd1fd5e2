"""`--dataset.*`: which LeRobot-format dataset a command reads, and which of its episodes are held out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policylab.datasets.errors import DatasetError
from policylab.datasets.lerobot_dataset import resolve_dataset_root

SPLIT_SEED = 0  # the episodes --dataset.val_fraction holds out are drawn with this seed: the same every run


@dataclass
class DatasetConfig:
    """The demonstrations to read.

    repo_id: dataset name, looked up in --dataset.root, else in the data home ($POLICYLAB_HOME, else
        ~/.cache/policylab/datasets, where `policylab record` writes), else on the Hugging Face hub.
    root: folder holding repo_id, or (without repo_id) the dataset folder itself.
    episodes: episode indices to use (default all), e.g. [0,1,2].
    val_episodes: episodes held out from training for validation, e.g. [8,9] (whole episodes, never frames).
    val_fraction: or the fraction of the episodes to hold out (at least one), drawn once with a fixed seed.
    """

    repo_id: str | None = None
    root: str | None = None
    episodes: list[int] | None = None
    val_episodes: list[int] | None = None
    val_fraction: float | None = None

    def __post_init__(self):
        if self.val_episodes is not None and self.val_fraction is not None:
            raise ValueError("give --dataset.val_episodes or --dataset.val_fraction, not both")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError(f"--dataset.val_fraction must be between 0 and 1, got {self.val_fraction}")

    @property
    def given(self) -> bool:
        return self.repo_id is not None or self.root is not None

    @property
    def holds_out(self) -> bool:
        return bool(self.val_episodes) or self.val_fraction is not None

    def folder(self) -> Path:
        """The dataset folder these flags name (downloaded from the hub when it is not local)."""
        return resolve_dataset_root(self.repo_id, self.root)

    def split(self, available: list[int]) -> tuple[list[int], list[int]]:
        """(training episodes, validation episodes) among `available` (restricted to --dataset.episodes)."""
        pool = sorted(set(available) if self.episodes is None else set(self.episodes) & set(available))
        if self.val_episodes is not None:
            unknown = sorted(set(self.val_episodes) - set(pool))
            if unknown:
                raise DatasetError(
                    f"--dataset.val_episodes: episodes {unknown} are not among the dataset's {pool[:3]}...{pool[-1:]}"
                )
            val = sorted(set(self.val_episodes))
        elif self.val_fraction is not None:
            count = max(1, round(self.val_fraction * len(pool)))
            val = sorted(np.random.default_rng(SPLIT_SEED).choice(pool, size=count, replace=False).tolist())
        else:
            val = []
        train = [e for e in pool if e not in val]
        if self.holds_out and not val:
            raise DatasetError(
                "the validation split is empty: give --dataset.val_episodes or a larger --dataset.val_fraction"
            )
        if not train:
            raise DatasetError(
                f"--dataset.val_*: every one of the {len(pool)} episodes is held out; nothing is left to train on"
            )
        return train, val
