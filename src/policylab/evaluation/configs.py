"""`policylab eval` configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from policylab.constants import HELD_OUT_SEED
from policylab.datasets import DatasetConfig
from policylab.envs import EnvConfig, PushTEnvConfig
from policylab.runs import PolicyPathConfig


@dataclass
class EvalSettings:
    """How many episodes, how batched, how many filmed.

    n_episodes: episodes to roll out; episode i starts from seed + i.
    batch_size: environments stepped together, with one batched policy call per control step.
    n_videos: the first this many episodes are saved as mp4 under output_dir/videos.
    frame_stride: offline (--dataset.* without --env.*): compare the predicted chunk at every this many frames.
    """

    n_episodes: int = 50
    batch_size: int = 10
    n_videos: int = 2
    frame_stride: int = 1

    def __post_init__(self):
        for name in ("n_episodes", "batch_size", "frame_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"--eval.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_videos < 0:
            raise ValueError(f"--eval.n_videos must be 0 or more, got {self.n_videos}")


@dataclass
class EvalConfig:
    """policylab eval: roll a trained policy out in the simulator, or (given --dataset.* and no --env.*)
    measure it offline against held-out demonstrations; writes eval_info.json.

    The env's observation type is the cheapest one that gives every input of the policy. Offline, the episodes
    are --dataset.episodes, else those the training run held out (--dataset.val_*), else all of them.

    output_dir: where eval_info.json and videos/ go (default outputs/eval/<time>_<policy type>).
    seed: episode i starts from seed + i (default far from the seeds `policylab record` uses).
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    policy: PolicyPathConfig = field(default_factory=PolicyPathConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    env: EnvConfig = field(default_factory=PushTEnvConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output_dir: str | None = None
    seed: int = HELD_OUT_SEED
    device: str | None = None
