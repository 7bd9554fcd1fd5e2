"""`policylab eval` configuration, and loading the policy a command is pointed at with `--policy.path`."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import draccus
from draccus.utils import DecodingError, ParsingError

from policylab.datasets import resolve_dataset_root
from policylab.envs import EnvConfig, PushTEnvConfig
from policylab.errors import PolicylabError
from policylab.flags import ConfigError
from policylab.policies import PreTrainedConfig, PreTrainedPolicy
from policylab.policies.pretrained import CONFIG_NAME, pretrained_folder, read_config
from policylab.training.configs import DatasetConfig

POLICY_PREFIX = "--policy."
TRAIN_CONFIG = "train_config.json"
HELD_OUT_SEED = 100_000  # `policylab record` starts its episodes from seeds 0, 1, ...: evaluate elsewhere


@dataclass
class PolicyPathConfig:
    """The trained policy.

    path: a training run folder (its newest checkpoint), a checkpoint folder (OUT/checkpoints/last) or a
        pretrained_model folder. Any other --policy.<field>=value changes that field of the checkpoint's
        config for this command, e.g. --policy.noise_scheduler_type=DDIM --policy.num_inference_steps=10,
        or --policy.n_action_steps=10.
    """

    path: str | None = None


@dataclass
class EvalSettings:
    """How many episodes, how batched, how many filmed.

    n_episodes: episodes to roll out; episode i starts from seed + i.
    batch_size: environments stepped together, with one batched policy call per control step.
    n_videos: the first this many episodes are saved as mp4 under output_dir/videos.
    """

    n_episodes: int = 50
    batch_size: int = 10
    n_videos: int = 2


@dataclass
class EvalConfig:
    """policylab eval: roll a trained policy out in the simulator and measure it (writes eval_info.json).

    The env's observation type is the cheapest one that gives every input of the policy.

    output_dir: where eval_info.json and videos/ go (default outputs/eval/<time>_<policy type>).
    seed: episode i starts from seed + i (default far from the seeds `policylab record` uses).
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    policy: PolicyPathConfig = field(default_factory=PolicyPathConfig)
    env: EnvConfig = field(default_factory=PushTEnvConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output_dir: str | None = None
    seed: int = HELD_OUT_SEED
    device: str | None = None

    def __post_init__(self):
        for name in ("n_episodes", "batch_size"):
            if getattr(self.eval, name) < 1:
                raise ValueError(f"--eval.{name} must be at least 1, got {getattr(self.eval, name)}")
        if self.eval.n_videos < 0:
            raise ValueError(f"--eval.n_videos must be 0 or more, got {self.eval.n_videos}")


def default_output_dir(command: str, policy_type: str) -> Path:
    return Path("outputs", command, f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}_{policy_type}")


def split_policy_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(`--policy.<field>=...` flags other than --policy.path, every other flag)."""
    overrides = [a for a in args if a.startswith(POLICY_PREFIX) and not a.startswith(POLICY_PREFIX + "path=")]
    return overrides, [a for a in args if a not in overrides]


def load_policy(path: str | None, overrides: list[str], device) -> PreTrainedPolicy:
    """The policy at `path` (see PolicyPathConfig) with `--policy.<field>=value` overrides applied."""
    if not path:
        raise ConfigError(
            "--policy.path is required: a training run folder, e.g. --policy.path=outputs/act_pusht, or one of "
            "its checkpoints, e.g. outputs/act_pusht/checkpoints/last"
        )
    folder = pretrained_folder(path)
    config = read_config(folder / CONFIG_NAME)
    changed = _parse_overrides(config, overrides, folder)
    return PreTrainedPolicy.from_pretrained(folder, device=device, **changed)


def _parse_overrides(config: PreTrainedConfig, overrides: list[str], folder: Path) -> dict:
    """The config fields that `overrides` change, decoded with the field types (draccus)."""
    if not overrides:
        return {}
    names = {f.name for f in dataclasses.fields(config)}
    stripped = [a[len(POLICY_PREFIX) :] for a in overrides]
    for arg in stripped:
        name = arg.split("=", 1)[0]
        if name not in names or "=" not in arg:
            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"did you mean {', '.join('--policy.' + c for c in close)}? " if close else ""
            raise ConfigError(
                f"--policy.{arg}: the {config.type} checkpoint in {folder} has no field '{name}' (flags look like "
                f"--policy.<field>=value); {hint}its fields: {', '.join(sorted(names))}"
            )
    saved = {k: v for k, v in config.to_dict().items() if k != "type"}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as defaults:
        json.dump(saved, defaults)
        defaults.flush()
        try:
            parsed = draccus.parse(type(config), config_path=defaults.name, args=["--" + a for a in stripped])
        except DecodingError as error:
            raise ConfigError(f"--policy.{'.'.join(error.key_path)}: {error.message}") from None
        except ParsingError as error:  # the config's own checks rejected the combination
            raise ConfigError(str(error.__cause__ or error)) from None
    return {name: getattr(parsed, name) for name in names if getattr(parsed, name) != getattr(config, name)}


def training_run_of(policy_path: str | Path) -> Path | None:
    """The training run folder (with train_config.json) that a policy path belongs to, if any."""
    run = (
        pretrained_folder(policy_path).resolve().parent.parent.parent
    )  # pretrained_model/<step>/checkpoints/
    return run if (run / TRAIN_CONFIG).is_file() else None


def dataset_root_for(policy_path: str | None, dataset: DatasetConfig, command: str) -> Path:
    """The dataset folder given by --dataset.*, else the one the policy's training run used."""
    if dataset.repo_id or dataset.root:
        return resolve_dataset_root(dataset.repo_id, dataset.root)
    run = training_run_of(policy_path) if policy_path else None
    if run is None:
        raise ConfigError(
            f"policylab {command} needs observations from a dataset: give --dataset.root=DIR (or --dataset.repo_id=ID); "
            f"{policy_path} is not inside a training run whose train_config.json names one"
        )
    trained_on = json.loads((run / TRAIN_CONFIG).read_text())["dataset"]
    try:
        return resolve_dataset_root(trained_on.get("repo_id"), trained_on.get("root"))
    except PolicylabError as error:
        raise ConfigError(
            f"the dataset the policy was trained on ({run / TRAIN_CONFIG}: {trained_on}) is not found from here "
            f"({error}); give it with --dataset.root=DIR"
        ) from None
