"""The training data stream: whole batches gathered at once, in an order fixed by (seed, epoch, step).

Batch k of epoch e is a slice of a permutation seeded by (seed, e), so the stream can restart at any step
(resume) and gives every process of a data-parallel run its own share of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from policylab.datasets import LeRobotDataset
from policylab.datasets.lerobot_dataset import scale_frames


def steps_per_epoch(num_frames: int, batch_size: int, world_size: int = 1) -> int:
    """Full global batches per pass over the data (at least one: a tiny dataset still trains)."""
    return max(1, num_frames // (batch_size * world_size))


class StepBatchSampler:
    """Yields the frame indices of each step's batch for this process, from `start_step` on, forever.

    positions: the frames training windows start from (e.g. all but the last few of each episode).
    """

    def __init__(
        self,
        positions: np.ndarray,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(positions) == 0:
            raise ValueError("no frames to train on")
        self.positions, self.batch_size, self.seed = np.asarray(positions), batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.per_epoch = steps_per_epoch(len(positions), batch_size, world_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = self.positions[torch.randperm(len(self.positions), generator=generator).numpy()]
        needed = self.per_epoch * self.batch_size * self.world_size
        return np.resize(order, needed) if needed > len(order) else order  # tiny datasets repeat frames

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        global_batch = self.batch_size * self.world_size
        while True:
            epoch, within = divmod(step, self.per_epoch)
            order = self.epoch_order(epoch)
            for k in range(within, self.per_epoch):
                batch = order[k * global_batch : (k + 1) * global_batch]
                yield batch[self.rank :: self.world_size].tolist()
            step = (epoch + 1) * self.per_epoch


class _BatchGather(torch.utils.data.Dataset):
    """`dataset[list_of_indices]` -> one batch dict, gathered with one indexing operation per key.

    Camera frames stay uint8 until `scale_camera_frames` runs where the batch is used: a quarter of the bytes
    to pass from worker processes and to copy to a GPU.
    """

    def __init__(self, dataset: LeRobotDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.dataset.gather(np.asarray(indices), scale_images=False)


def scale_camera_frames(batch: dict[str, torch.Tensor], camera_keys: list[str]) -> dict[str, torch.Tensor]:
    """The stream's uint8 camera frames -> float32 in [0, 1], on the device the batch is on now."""
    return {key: scale_frames(value) if key in camera_keys else value for key, value in batch.items()}


def make_dataloader(
    dataset: LeRobotDataset, sampler: StepBatchSampler, num_workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _BatchGather(dataset),
        sampler=sampler,
        batch_size=None,  # the sampler yields whole batches
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        # its own generator: starting an iterator draws a seed, which must not consume the global RNG that a
        # resumed run restores for dropout and noise
        generator=torch.Generator().manual_seed(sampler.seed),
    )
