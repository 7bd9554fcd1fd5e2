"""The training data stream: batches in a fixed order, camera frames passed as uint8 and scaled where used."""

import numpy as np
import torch

from policylab.datasets import LeRobotDataset
from policylab.training.data import StepBatchSampler, make_dataloader, scale_camera_frames


def test_stream_batches_equal_dataset_items_once_scaled(synthetic_dataset):
    root, _ = synthetic_dataset
    dataset = LeRobotDataset(root=root, delta_timestamps={"observation.image": [-0.1, 0.0]})
    sampler = StepBatchSampler(np.arange(len(dataset)), batch_size=4, seed=0)
    for num_workers in (0, 1):
        raw = next(iter(make_dataloader(dataset, sampler, num_workers, pin_memory=False)))
        assert raw["observation.image"].dtype == torch.uint8  # a quarter of the bytes between processes
        batch = scale_camera_frames(raw, ["observation.image"])
        items = [dataset[i] for i in next(iter(sampler))]
        for key, value in batch.items():
            torch.testing.assert_close(value, torch.stack([item[key] for item in items]), rtol=0, atol=0)
