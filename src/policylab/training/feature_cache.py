"""Training on a frozen trunk's features: each camera frame goes through the trunk once, before the first step.

With the trunk frozen (lr_backbone=0, e.g. after `--pretrain.steps`), a step would otherwise recompute the same
features for every frame of every window, which is most of a small image policy's step on a CPU. The features
are computed as at inference (eval mode: center crop, no random crop), kept in memory as float32, and served
by the dataset as `<camera>.feature_map` windows in place of the frames.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from policylab.constants import FEATURE_MAP_SUFFIX
from policylab.datasets import LeRobotDataset
from policylab.datasets.lerobot_dataset import scale_frames
from policylab.errors import ConfigError
from policylab.policies import PreTrainedPolicy

BATCH_FRAMES = 256


@torch.no_grad()
def serve_feature_maps(policy: PreTrainedPolicy, dataset: LeRobotDataset, show_progress: bool) -> float:
    """Compute the trunk's feature map of every frame of each of the policy's cameras and have `dataset`
    serve them in place of the frames; returns the seconds it took."""
    if not policy.accepts_feature_maps:
        raise ConfigError(
            f"--training.cache_features=true: {policy.config.type} policies train from frames only (Diffusion "
            "takes cached features)"
        )
    if not policy.config.image_keys:
        raise ConfigError("--training.cache_features=true: the policy has no camera input to cache")
    started = time.monotonic()
    positions = np.arange(len(dataset))
    for key in policy.config.image_keys:
        maps = None
        with (
            policy.evaluating(),
            tqdm(
                total=len(dataset), desc=f"trunk features of {key}", unit="frame", disable=not show_progress
            ) as progress,
        ):
            for start in range(0, len(dataset), BATCH_FRAMES):
                chunk = positions[start : start + BATCH_FRAMES]
                frames = scale_frames(dataset.camera_frames(key, chunk).to(policy.device))  # (N, C, H, W)
                features = policy.camera_features(key, policy.normalize_inputs({key: frames})[key])
                if maps is None:  # (frames, C', h, w)
                    maps = np.empty((len(dataset), *features.shape[1:]), dtype=np.float32)
                maps[chunk] = features.float().cpu().numpy()
                progress.update(len(chunk))
        if show_progress:
            print(
                f"{key}: trunk features of {len(dataset)} frames kept in memory ({maps.nbytes / 2**30:.2f} GiB), "
                "computed once with the trunk frozen, center-cropped as at inference",
                file=sys.stderr,
            )
        dataset.serve_in_place_of(key, key + FEATURE_MAP_SUFFIX, maps)
    return time.monotonic() - started
