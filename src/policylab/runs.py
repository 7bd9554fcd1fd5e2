"""Training runs and checkpoints on disk: what a `--policy.path` names, resolved once, and where it came from.

    OUT/                                  a training run (`policylab train --output_dir=OUT`)
      train_config.json                   the settings it trained with: dataset, policy, training
      metrics.jsonl                       training metrics
      checkpoints/<step>/pretrained_model/{config.json, model.safetensors}
      checkpoints/<step>/training_state/  optimizer, scheduler, RNG states; state.json has step and train_seconds
      checkpoints/last -> <step>

Commands turn the path a user gives into one `Checkpoint` (its folder, config and training run) and pass
that along; nothing below resolves the path again.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import draccus
from draccus.utils import DecodingError, ParsingError

from policylab.constants import (
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT,
    PRETRAIN_INFO,
    SPLIT_FILE,
    TRAIN_CONFIG,
    TRAINING_STATE_DIR,
)
from policylab.datasets import DatasetConfig
from policylab.errors import ConfigError, PolicylabError, did_you_mean
from policylab.policies import PreTrainedConfig, PreTrainedPolicy
from policylab.policies.pretrained import CONFIG_NAME, pretrained_folder, read_config

POLICY_PREFIX = "--policy."


@dataclass
class PolicyPathConfig:
    """The trained policy.

    path: a training run folder (its newest checkpoint), a checkpoint folder (OUT/checkpoints/last) or a
        pretrained_model folder. Any other --policy.<field>=value changes that field of the checkpoint's
        config for this command, e.g. --policy.noise_scheduler_type=DDIM --policy.num_inference_steps=10,
        or --policy.n_action_steps=10.
    """

    path: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A trained policy on disk: `folder` holds config.json and model.safetensors; `run` is the training run
    that wrote it (None for a folder copied elsewhere)."""

    path: str  # as the user gave it
    folder: Path
    config: PreTrainedConfig
    run: Path | None

    @classmethod
    def resolve(cls, path: str | Path | None, flag: str = "--policy.path") -> Checkpoint:
        if not path:
            raise ConfigError(
                f"{flag} is required: a training run folder, e.g. {flag}=outputs/act_pusht, or one of its "
                "checkpoints, e.g. outputs/act_pusht/checkpoints/last"
            )
        folder = pretrained_folder(path)
        run = folder.resolve().parent.parent.parent  # <run>/checkpoints/<step>/pretrained_model
        return cls(
            str(path),
            folder,
            read_config(folder / CONFIG_NAME),
            run if (run / TRAIN_CONFIG).is_file() else None,
        )

    @property
    def name(self) -> str:
        """Its training run's folder name, else the path's last part."""
        return (self.run or Path(self.path).resolve()).name

    def load(self, device=None, **changes) -> PreTrainedPolicy:
        """The policy, with `changes` to inference-time config fields (e.g. num_inference_steps=10)."""
        return PreTrainedPolicy.from_pretrained(self.folder, device=device, **changes)

    def changes(self, overrides: list[str]) -> dict:
        """The config fields that `--policy.<field>=value` flags change, decoded with the field types."""
        return parse_overrides(self.config, overrides, self.folder)

    def split(self) -> dict | None:
        """The run's split.json: the dataset, and the episodes it trained on and held out (None: not recorded)."""
        path = None if self.run is None else self.run / SPLIT_FILE
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    def train_config(self) -> dict | None:
        return None if self.run is None else json.loads((self.run / TRAIN_CONFIG).read_text())

    def training_facts(self) -> dict:
        """Steps, training wall time, batch size and dataset (None where the checkpoint does not say); where the
        run started from a pretrained camera trunk, the label it was pretrained on and that pretraining's time."""
        facts = {"steps": None, "train_seconds": None, "batch_size": None, "dataset": None}
        state = self.folder.resolve().parent / TRAINING_STATE_DIR / "state.json"
        if state.is_file():
            info = json.loads(state.read_text())
            facts["steps"], facts["train_seconds"] = info.get("step"), info.get("train_seconds")
        train_config = self.train_config()
        if train_config is not None:
            facts["batch_size"] = train_config["training"]["batch_size"]
            facts["dataset"] = train_config["dataset"].get("root") or train_config["dataset"].get("repo_id")
            facts.update(pretrained_trunk(train_config.get("init_from")))
        return facts

    def dataset_root(self, dataset: DatasetConfig, command: str) -> Path:
        """The dataset folder given by --dataset.*, else the one the training run used."""
        if dataset.given:
            return dataset.folder()
        train_config = self.train_config()
        if train_config is None:
            raise ConfigError(
                f"policylab {command} needs observations from a dataset: give --dataset.root=DIR (or "
                f"--dataset.repo_id=ID); {self.path} is not inside a training run whose {TRAIN_CONFIG} names one"
            )
        trained_on = DatasetConfig(
            train_config["dataset"].get("repo_id"), train_config["dataset"].get("root")
        )
        try:
            return trained_on.folder()
        except PolicylabError as error:
            raise ConfigError(
                f"the dataset the policy was trained on ({self.run / TRAIN_CONFIG}: {train_config['dataset']}) is "
                f"not found from here ({error}); give it with --dataset.root=DIR"
            ) from None


@dataclass
class ExportConfig:
    """policylab export: write a trained policy in another tool's checkpoint layout.

    to: the layout: lerobot (LeRobot 0.6's pretrained_model folder: config.json, model.safetensors and the
        normalization processors), loaded there by `PreTrainedPolicy.from_pretrained(DIR)`.
    output_dir: the folder to write (required).
    """

    policy: PolicyPathConfig = dataclasses.field(default_factory=PolicyPathConfig)
    to: str = "lerobot"
    output_dir: str | None = None

    def __post_init__(self):
        if self.to != "lerobot":
            raise ValueError(f"--to={self.to}: the layouts policylab writes are: lerobot")


def pretrained_trunk(init_from: str | None) -> dict:
    """{"trunk_pretrained_on": label, "pretrain_seconds": s} when `init_from` is a `policylab pretrain` run (or a
    run's OUT/pretrain stage); else {}."""
    if init_from is None or not (Path(init_from) / PRETRAIN_INFO).is_file():
        return {}
    info = json.loads((Path(init_from) / PRETRAIN_INFO).read_text())
    state = Path(init_from) / CHECKPOINTS_DIR / LAST_CHECKPOINT / TRAINING_STATE_DIR / "state.json"
    seconds = json.loads(state.read_text())["train_seconds"] if state.is_file() else None
    return {"trunk_pretrained_on": info["target"], "pretrain_seconds": seconds}


def run_export(config: ExportConfig) -> list[Path]:
    """`policylab export`: the checkpoint of --policy.path in LeRobot 0.6's layout; prints and returns the files."""
    from policylab.policies.lerobot_format import export_to_lerobot

    if not config.output_dir:
        raise ConfigError("--output_dir is required: the folder the LeRobot checkpoint goes to")
    checkpoint = Checkpoint.resolve(config.policy.path)
    folder = checked_output_dir(config.output_dir)
    written = export_to_lerobot(checkpoint.load("cpu"), folder)
    for path in written:
        print(f"written: {path.resolve()}")
    return written


def split_policy_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(`--policy.<field>=...` flags other than --policy.path, every other flag)."""
    overrides = [a for a in args if a.startswith(POLICY_PREFIX) and not a.startswith(POLICY_PREFIX + "path=")]
    return overrides, [a for a in args if a not in overrides]


def parse_overrides(config: PreTrainedConfig, overrides: list[str], folder: Path) -> dict:
    """The fields of `config` that `--policy.<field>=value` flags change, decoded with the field types."""
    if not overrides:
        return {}
    names = {f.name for f in dataclasses.fields(config)}
    stripped = [a[len(POLICY_PREFIX) :] for a in overrides]
    for arg in stripped:
        name = arg.split("=", 1)[0]
        if name not in names or "=" not in arg:
            raise ConfigError(
                f"--policy.{arg}: the {config.type} checkpoint in {folder} has no field '{name}' (flags look like "
                f"--policy.<field>=value); {did_you_mean(name, names, '--policy.')}its fields: "
                f"{', '.join(sorted(names))}"
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


def default_output_dir(command: str, name: str) -> Path:
    """Where a command writes when --output_dir is not given: outputs/<command>/<time>_<name>."""
    return Path("outputs", command, f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}_{name}")


def checked_output_dir(path: str | Path, flag: str = "--output_dir") -> Path:
    """`path`, once it is clear the folder can be created and written (nothing is created here); else a
    ConfigError naming `flag`, before any work starts."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag}={path}: cannot create it ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}={path}: cannot create it ({existing} is not writable)")
    return path
