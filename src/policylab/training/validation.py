"""Validation on held-out episodes: the loss and the action error of the policy, on the same frames with the
same noise every time, so that the numbers of two steps compare."""

from __future__ import annotations

import numpy as np
import torch

from policylab.constants import ACTION, PAD_SUFFIX
from policylab.datasets import LeRobotDataset
from policylab.training.data import scale_camera_frames

VAL_SEED = 0


class Validation:
    """`validation()` -> {"loss", "action_l1", "action_l1_per_dim"} on up to `n_batches` batches of frames
    spread evenly over the held-out episodes.

    loss: the policy's training loss in eval mode (no dropout; a Diffusion loss with the same noise each time).
    action_l1: mean |predicted - demonstrated| over the predicted chunk's real (not padded) actions, in
        normalized units (what `checkpoints/best` is chosen by: every action dimension weighs the same);
    action_l1_per_dim: the same per action dimension, in the dataset's units.
    """

    def __init__(
        self, policy, dataset: LeRobotDataset, batch_size: int, n_batches: int, device: torch.device
    ):
        self.policy, self.device = policy, device
        positions = dataset.frame_positions(drop_last=policy.config.frames_dropped_at_episode_end)
        if len(positions) == 0:
            positions = dataset.frame_positions()
        count = min(len(positions), batch_size * n_batches)
        picks = positions[np.linspace(0, len(positions) - 1, count).round().astype(int)]
        self.batches = [
            dataset.gather(picks[i : i + batch_size], scale_images=False) for i in range(0, count, batch_size)
        ]

    @torch.no_grad()
    def __call__(self) -> dict:
        policy = self.policy
        losses, errors, normalized, counts = [], 0.0, 0.0, 0.0
        forked = [self.device] if self.device.type == "cuda" else []
        with policy.evaluating(), torch.random.fork_rng(devices=forked):
            torch.manual_seed(VAL_SEED)
            for batch in self.batches:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                batch = scale_camera_frames(batch, policy.config.image_keys)
                losses.append(float(policy.forward(batch)["loss"]))
                predicted = policy.predict_action_chunk({k: batch[k] for k in policy.config.input_shapes})
                steps = min(predicted.shape[1], batch[ACTION].shape[1])
                true, real = (
                    batch[ACTION][:, :steps],
                    ~batch[ACTION + PAD_SUFFIX][:, :steps, None],
                )  # (B, T, Da), (B, T, 1)
                predicted = predicted[:, :steps]
                errors = errors + ((predicted - true).abs() * real).sum(dim=(0, 1))  # (Da,)
                norm = policy.normalize_targets
                scaled = (norm({ACTION: predicted})[ACTION] - norm({ACTION: true})[ACTION]).abs() * real
                normalized += float(scaled.sum())
                counts += float(real.sum())
        per_dim = (errors / max(counts, 1)).tolist()
        return {
            "loss": float(np.mean(losses)),
            "action_l1": normalized / max(counts * len(per_dim), 1),
            "action_l1_per_dim": per_dim,
        }
