"""`policylab pretrain`: teach a policy's camera trunk to see before the policy trains, by regressing a recorded
feature (PushT: the block's keypoints, `observation.environment_state`) from each camera frame.

The run is a training run of the engine (progress bar, checkpoints, resume). Its checkpoint is the policy with
the pretrained trunk and every other layer as initialized; `policylab train --init_from=RUN` starts from it
(`--training.lr_backbone=0` keeps the trunk frozen, which also skips its backward pass). The recorded feature
is a training label of the trunk only: the policy never receives it as an input.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from policylab.constants import (
    CHECKPOINTS_DIR,
    HEAD_WEIGHTS,
    LAST_CHECKPOINT,
    PRETRAIN_INFO,
    TRAINING_STATE_DIR,
)
from policylab.datasets import DatasetConfig, LeRobotDataset, LeRobotDatasetMetadata
from policylab.errors import ConfigError
from policylab.policies import ACTConfig, PreTrainedConfig, PreTrainedPolicy
from policylab.policies.backbones import SpatialSoftmax
from policylab.runs import Checkpoint, checked_output_dir, default_output_dir
from policylab.training.checkpoints import last_checkpoint, save_command_config
from policylab.training.configs import PretrainSettings, TrainConfig, TrainingConfig
from policylab.training.data import scale_camera_frames
from policylab.training.trainer import check_config
from policylab.training.trainer import train as train_engine
from policylab.utils.device import select_device
from policylab.utils.files import write_json

PRETRAIN_CONFIG = "pretrain_config.json"
PRETRAIN_DIR = "pretrain"  # OUT/pretrain: the trunk `policylab train --pretrain.steps=N` pretrains first


@dataclass
class PretrainTrainingConfig(TrainingConfig):
    """How to optimize the trunk, as for `policylab train`: by default 2,000 steps at batch 64, lr 1e-3 on a cosine
    schedule with 500 warm-up steps, no EMA (the trunk and its head are trained together and saved together)."""

    steps: int | None = 2000
    batch_size: int = 64
    lr: float | None = 1e-3
    scheduler: str | None = "cosine"
    warmup_steps: int | None = 500
    ema_decay: float | None = 0.0


@dataclass
class PretrainConfig:
    """policylab pretrain: pretrain a policy's camera trunk on the dataset, to start `policylab train` from.

    policy: the policy whose trunk to pretrain: give the same --policy.* (or --config_path preset) as the
        `policylab train --init_from=RUN` that starts from it.
    dataset: the frames and the target; --dataset.val_fraction or val_episodes hold episodes out, on which the
        trunk's error is measured at the end (pretrain_info.json).
    training: the engine's settings, as for `policylab train`.
    output_dir: where the run goes (default outputs/pretrain/<time>_<policy>).
    resume: continue the run in output_dir from its last checkpoint (its saved settings are used).
    seed: seeds weights, data order and crops.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    policy: PreTrainedConfig = field(default_factory=ACTConfig)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    training: PretrainTrainingConfig = field(default_factory=PretrainTrainingConfig)
    output_dir: str | None = None
    resume: bool = False
    seed: int = 1000
    device: str | None = None


class TrunkPretraining(nn.Module):
    """The training objective: the policy's trunks, a spatial-softmax head per camera and one linear layer
    regress `target` from the current frame of every camera. `forward(batch)` -> {"loss": MSE in standardized
    units, "target_l1": mean |error| in the dataset's units}."""

    def __init__(self, policy: PreTrainedPolicy, target: str, stats: dict[str, Tensor], num_keypoints: int):
        super().__init__()
        self.policy, self.target, self.cameras = policy, target, policy.config.image_keys
        pools = []
        for key in self.cameras:
            with torch.no_grad(), policy.evaluating():
                frame = torch.zeros(1, *policy.config.input_shapes[key], device=policy.device)
                _, channels, h, w = policy.camera_features(key, frame).shape
            pools.append(SpatialSoftmax(channels, h, w, num_keypoints))
        out = nn.Linear(2 * num_keypoints * len(self.cameras), stats["mean"].numel())
        self.head = nn.ModuleDict({"pools": nn.ModuleList(pools), "out": out}).to(policy.device)
        self.register_buffer("mean", stats["mean"].flatten().to(policy.device))
        self.register_buffer("std", stats["std"].flatten().clamp_min(1e-6).to(policy.device))

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """Standardized target predicted from the current frame of each camera, (B, D)."""
        frames = {key: current(batch[key], image=True) for key in self.cameras}  # (B, C, H, W) each
        frames = self.policy.normalize_inputs(frames)
        features = [
            pool(self.policy.camera_features(key, frames[key])).flatten(1)  # (B, 2K)
            for key, pool in zip(self.cameras, self.head["pools"], strict=True)
        ]
        return self.head["out"](torch.cat(features, dim=1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        target = (current(batch[self.target], image=False) - self.mean) / self.std  # (B, D)
        error = self.predict(batch) - target
        return {"loss": error.pow(2).mean(), "target_l1": (error.abs() * self.std).mean()}


def current(values: Tensor, image: bool) -> Tensor:
    """The current step of a batch that may hold an observation window: (B, [To,] ...) -> (B, ...)."""
    return values[:, -1] if values.dim() == (5 if image else 3) else values


def run_pretrain(config: PretrainConfig) -> Path:
    """Pretrain the trunk of `config.policy` into `config.output_dir` (resuming it); returns that folder."""
    output_dir = checked_output_dir(config.output_dir or default_output_dir("pretrain", config.policy.type))
    meta = LeRobotDatasetMetadata(config.dataset.folder())
    policy_config = config.policy.with_dataset_features(meta.features)
    check_pretrainable(config, policy_config, meta)
    train_episodes, held_out = config.dataset.split([e.episode_index for e in meta.episodes])
    training = config.training  # the trunk trains at lr (ACT's preset would give it 1e-5)
    if training.lr_backbone is None:
        lr = training.lr if training.lr is not None else policy_config.training_preset().lr
        training = dataclasses.replace(training, lr_backbone=lr)
    train_config = TrainConfig(
        dataset=DatasetConfig(root=str(meta.root), episodes=train_episodes),
        policy=config.policy,
        training=training,
        output_dir=str(output_dir),
        resume=config.resume,
        seed=config.seed,
        device=config.device,
    )
    save_command_config(output_dir, config, PRETRAIN_CONFIG)
    stats = meta.stats[config.pretrain.target]

    def objective(policy: PreTrainedPolicy) -> TrunkPretraining:
        return TrunkPretraining(policy, config.pretrain.target, stats, config.pretrain.num_keypoints)

    train_engine(train_config, objective=objective)
    info = {
        "target": config.pretrain.target,
        "train_episodes": len(train_episodes),
        "held_out_episodes": held_out,
    }
    if held_out:
        info["held_out"] = held_out_error(output_dir, config, meta.root, held_out, stats)
    write_json(output_dir / PRETRAIN_INFO, info)
    return output_dir


def check_pretrainable(config: PretrainConfig, policy_config: PreTrainedConfig, meta: LeRobotDatasetMetadata):
    target, features = config.pretrain.target, meta.features
    if config.training.lr_backbone == 0:
        raise ConfigError(
            "--training.lr_backbone=0 freezes the trunk that pretraining trains; leave it unset"
        )
    if not policy_config.image_keys:
        raise ConfigError(
            f"--policy.input_shapes: the policy has no camera input to pretrain ({', '.join(policy_config.input_shapes)})"
        )
    if target not in features or features[target]["dtype"] in ("video", "image"):
        vectors = [k for k, f in features.items() if f["dtype"] not in ("video", "image")]
        raise ConfigError(
            f"--pretrain.target={target}: {meta.root} has no such vector feature (it has {', '.join(vectors)}); "
            "record PushT with --env.obs_type=pixels_environment_state_agent_pos for the block's keypoints"
        )
    if target in policy_config.input_shapes:
        print(f"policylab pretrain: note: {target} is also an input of this policy", file=sys.stderr)


@torch.no_grad()
def held_out_error(output_dir: Path, config: PretrainConfig, root: Path, episodes: list[int], stats) -> dict:
    """Mean |error| of the pretrained trunk and head on every frame of the held-out episodes, per dimension in
    the dataset's units."""
    device = select_device(config.device)
    policy = Checkpoint.resolve(output_dir, "--output_dir").load(device).eval()
    objective = TrunkPretraining(policy, config.pretrain.target, stats, config.pretrain.num_keypoints).eval()
    state = output_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT / TRAINING_STATE_DIR / HEAD_WEIGHTS
    objective.head.load_state_dict(load_file(str(state)))
    dataset = LeRobotDataset(root, episodes=episodes, cameras=policy.config.image_keys)
    positions = dataset.frame_positions()
    total, count = 0.0, 0
    for start in range(0, len(positions), config.training.batch_size):
        batch = dataset.gather(positions[start : start + config.training.batch_size], scale_images=False)
        batch = scale_camera_frames({k: v.to(device) for k, v in batch.items()}, policy.config.image_keys)
        target = (current(batch[config.pretrain.target], image=False) - objective.mean) / objective.std
        total = total + ((objective.predict(batch) - target).abs() * objective.std).sum(dim=0)  # (D,)
        count += len(target)
    per_dim = (total / count).tolist()
    return {"frames": count, "target_l1": sum(per_dim) / len(per_dim), "target_l1_per_dim": per_dim}


def train(config: TrainConfig, evaluate=None) -> Path:
    """Train (or resume) the policy of `config`; returns the output folder. With `pretrain.steps`, a new run first
    pretrains the camera trunk into OUT/pretrain (an interrupted pretraining resumes) and the policy starts from
    it, the trunk frozen unless `training.lr_backbone` is given. `evaluate` as for the engine's `train`."""
    output_dir = Path(config.output_dir or config.default_output_dir())
    if config.pretrain.steps:  # the trunk stays frozen in a resumed run too
        lr_backbone = 0.0 if config.training.lr_backbone is None else config.training.lr_backbone
        training = dataclasses.replace(config.training, lr_backbone=lr_backbone)
        config = dataclasses.replace(config, training=training, output_dir=str(output_dir))
    check_config(config)
    if config.pretrain.steps and last_checkpoint(output_dir) is None:
        if config.init_from is not None:
            raise ConfigError(
                f"--init_from={config.init_from} and --pretrain.steps={config.pretrain.steps} both give the policy "
                "its starting weights; give one (--pretrain.steps=0 to start from --init_from)"
            )
        trunk = pretrain_trunk(config, output_dir / PRETRAIN_DIR)
        config = dataclasses.replace(config, init_from=str(trunk), resume=False)
    return train_engine(config, evaluate)


def pretrain_trunk(config: TrainConfig, folder: Path) -> Path:
    """The pretraining stage of `config` in `folder` (kept when finished, resumed when interrupted)."""
    if (folder / PRETRAIN_INFO).is_file():
        return folder
    p, t = config.pretrain, config.training
    dataset = config.dataset
    if not dataset.holds_out:
        dataset = dataclasses.replace(dataset, val_fraction=p.val_fraction)
    training = PretrainTrainingConfig(steps=p.steps, batch_size=p.batch_size, lr=p.lr, amp=t.amp,
                                      num_workers=t.num_workers, log=t.log)  # fmt: skip
    print(
        f"pretraining the camera trunk to predict {p.target} ({p.steps} steps) into {folder}", file=sys.stderr
    )
    run_pretrain(
        PretrainConfig(
            dataset=dataset,
            policy=config.policy,
            pretrain=PretrainSettings(p.target, p.num_keypoints),
            training=training,
            output_dir=str(folder),
            resume=last_checkpoint(folder) is not None,
            seed=config.seed,
            device=config.device,
        )  # fmt: skip
    )
    return folder
