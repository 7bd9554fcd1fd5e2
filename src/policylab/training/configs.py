"""`policylab train` configuration: which data, which policy, how to optimize, where to write."""

from __future__ import annotations

from dataclasses import dataclass, field

from policylab.constants import OBS_ENV_STATE
from policylab.datasets import DatasetConfig
from policylab.policies import ACTConfig, PreTrainedConfig
from policylab.runs import default_output_dir

SCHEDULERS = ("constant", "cosine")
LOGGERS = ("jsonl", "tensorboard")


@dataclass
class TrainingConfig:
    """How to optimize. Unset optimizer fields take the policy's preset (shown in train_config.json).

    steps: optimizer steps to run; or give num_epochs.
    num_epochs: passes over the dataset (steps = num_epochs x frames // (batch_size x processes); Diffusion
        leaves out the last drop_n_last_frames frames of each episode).
    batch_size: samples per step and process.
    lr: learning rate (preset: ACT 1e-5, Diffusion 1e-4).
    lr_backbone: learning rate of the vision backbone (preset: ACT 1e-5; others train it at lr).
    weight_decay: AdamW weight decay (preset: ACT 1e-4, Diffusion 1e-6).
    betas: AdamW betas, e.g. [0.95,0.999].
    scheduler: learning-rate schedule: constant or cosine (decay to 0 after warmup_steps of linear warm-up).
    warmup_steps: steps of linear learning-rate warm-up.
    grad_clip_norm: clip the gradients' global norm to this (0: no clipping).
    ema_decay: keep an exponential moving average of the weights with this decay and save it as the
        model (preset: Diffusion 0.9999 with warm-up, ACT none); 0 turns it off.
    amp: mixed precision: the forward pass in bfloat16 on a CUDA GPU (float16 with loss scaling on GPUs
        without bfloat16) or on a CPU with native bfloat16 (AVX512-BF16 or AMX); weights stay float32.
        Refused on MPS and on CPUs without native bfloat16 (slower there than float32).
    cache_features: with the vision trunk frozen (lr_backbone=0, or after --pretrain.steps), compute each frame's
        trunk features once before training, as at inference (center crop: no random-crop augmentation), and
        train on those (Diffusion; float32 in memory, the size is printed).
    num_workers: DataLoader worker processes (default: 0 on CPU, where in-process batch gathering is fastest;
        4 on GPU).
    log_freq: write averaged metrics to metrics.jsonl every this many steps.
    save_freq: write a checkpoint every this many steps (and always at the end).
    eval_freq: evaluate in the simulator every this many steps (0: never).
    eval_episodes: episodes per evaluation during training (from the held-out seeds 100000, ...).
    max_minutes: stop (with a checkpoint) after this much training time; resume later with --resume=true.
    log: where metrics go besides the progress bar: jsonl, or tensorboard as well (needs tensorboard).
    val_freq: with held-out episodes (--dataset.val_episodes or --dataset.val_fraction), validate every this
        many steps (default: every save_freq) and at the end; the best checkpoint is linked as checkpoints/best.
    val_batches: batches of batch_size frames, spread over the held-out episodes, each validation uses.
    """

    steps: int | None = None
    num_epochs: int | None = None
    batch_size: int = 8
    lr: float | None = None
    lr_backbone: float | None = None
    weight_decay: float | None = None
    betas: list[float] | None = None
    scheduler: str | None = None
    warmup_steps: int | None = None
    grad_clip_norm: float = 10.0
    ema_decay: float | None = None
    amp: bool = False
    cache_features: bool = False
    num_workers: int | None = None
    log_freq: int = 100
    save_freq: int = 1000
    eval_freq: int = 0
    eval_episodes: int = 10
    max_minutes: float | None = None
    log: str = "jsonl"
    val_freq: int | None = None
    val_batches: int = 8


@dataclass
class PretrainSettings:
    """What the camera trunk learns to predict.

    target: the recorded feature regressed from each frame, standardized by the dataset's statistics (PushT:
        observation.environment_state, the block's keypoints, in recordings made with
        --env.obs_type=pixels_environment_state_agent_pos).
    num_keypoints: keypoints of the spatial-softmax head the trunk is trained through (the head is not kept).
    """

    target: str = OBS_ENV_STATE
    num_keypoints: int = 32


@dataclass
class TrunkPretrainingConfig(PretrainSettings):
    """The camera trunk's pretraining, which `policylab train` runs first when steps > 0 (as `policylab pretrain`
    would, into OUT/pretrain; an interrupted one resumes). The policy then starts from that trunk, frozen
    unless --training.lr_backbone is given. The target is a label of the trunk only, never a policy input.

    steps: pretraining steps before the policy trains (0: none).
    batch_size: frames per pretraining step.
    lr: learning rate of the trunk and its head (cosine schedule, 500 warm-up steps).
    val_fraction: episodes held out to measure the trunk's error on, when the run holds none out itself.
    """

    steps: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    val_fraction: float = 0.1


@dataclass
class TrainConfig:
    """policylab train: train a policy on a LeRobot-format dataset and write checkpoints.

    output_dir: where checkpoints, metrics.jsonl and train_config.json go (default outputs/train/<time>_<policy>).
    resume: continue the run in output_dir from its last checkpoint.
    pretrain: pretrain the policy's camera trunk on the dataset before it trains (see TrunkPretrainingConfig).
    init_from: a trained policy of the same type (run folder or checkpoint) whose weights a new run starts
        from instead of random ones (fine-tuning). The network may have fewer layers than that one's (e.g.
        --policy.n_mid_res_blocks=0): the weights of the missing layers are left out; every weight it has
        must be there, with the same shape.
    seed: seeds weights, data order and noise: the same seed gives the same loss curve on CPU.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    policy: PreTrainedConfig = field(default_factory=ACTConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pretrain: TrunkPretrainingConfig = field(default_factory=TrunkPretrainingConfig)
    output_dir: str | None = None
    resume: bool = False
    init_from: str | None = None
    seed: int = 1000
    device: str | None = None

    def default_output_dir(self) -> str:
        return str(default_output_dir("train", self.policy.type))
