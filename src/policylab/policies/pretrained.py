"""What every policy shares: its config base (a draccus choice type), saving and loading, observation checks.

A policy is a folder under `policies/` with a config registered here (`@PreTrainedConfig.register_subclass`)
and a `PreTrainedPolicy` subclass that names that config in `config_class`. A checkpoint is a folder:

    config.json          the config, with "type" naming the policy
    model.safetensors    the weights, normalization statistics included
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import draccus
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from policylab.constants import ACTION, CHECKPOINTS_DIR, LAST_CHECKPOINT, PAD_SUFFIX, PRETRAINED_MODEL_DIR
from policylab.errors import PolicylabError
from policylab.policies.normalize import Normalizer

CONFIG_NAME = "config.json"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the hub names repositories
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(PolicylabError, ValueError):
    """A policy checkpoint that is missing, corrupt, or does not match its config."""


class ObservationError(PolicylabError, ValueError):
    """An observation or batch that lacks a key the policy needs, or has the wrong shape."""


@dataclass
class TrainingPreset:
    """The optimizer and schedule a policy trains best with (the engine's defaults for it)."""

    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_backbone: float | None = None  # None: the vision backbone trains at `lr`
    scheduler: str = "constant"  # or "cosine" (with linear warm-up)
    warmup_steps: int = 0
    ema_decay: float | None = None  # None: no EMA of the weights


@dataclass
class PreTrainedConfig(draccus.ChoiceRegistry):
    """Base of every policy config; `--policy.type` picks the registered subclass.

    input_shapes: observation key -> shape of one frame, images as [C, H, W], e.g.
        {"observation.state": [2], "observation.environment_state": [16]}. Default: every observation
        feature of the training dataset.
    output_shapes: {"action": [Da]}. Default: from the training dataset.
    input_normalization_modes: key -> mean_std, min_max or identity. Default: the policy's choice per key.
    output_normalization_modes: as input_normalization_modes, for the actions.
    """

    input_shapes: dict[str, list[int]] | None = None
    output_shapes: dict[str, list[int]] | None = None
    input_normalization_modes: dict[str, str] | None = None
    output_normalization_modes: dict[str, str] | None = None

    def __post_init__(self):
        if self.input_shapes is not None and self.input_normalization_modes is None:
            self.input_normalization_modes = {
                k: self.default_normalization_mode(k) for k in self.input_shapes
            }
        if self.output_shapes is not None and self.output_normalization_modes is None:
            self.output_normalization_modes = {
                k: self.default_normalization_mode(k) for k in self.output_shapes
            }

    @property
    def type(self) -> str:
        return self.get_choice_name(self.__class__)

    # -- what subclasses define ---------------------------------------------------------------------------
    def default_normalization_mode(self, key: str) -> str:
        return "mean_std"

    @property
    def observation_delta_indices(self) -> list[int] | None:
        """Frame offsets of the observations a training sample holds (e.g. [-1, 0]); None: the current frame
        alone, without a time axis."""
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        """Frame offsets of the actions a training sample holds (e.g. 0 .. chunk_size-1)."""
        raise NotImplementedError

    def training_preset(self) -> TrainingPreset:
        raise NotImplementedError

    @property
    def frames_dropped_at_episode_end(self) -> int:
        """Frames at the end of each episode that training windows do not start from (0: none)."""
        return 0

    def without_pretrained_weights(self) -> PreTrainedConfig:
        """This config with no pretrained backbone to fetch: for building a model whose weights a
        checkpoint is about to replace (loading must work offline)."""
        return self

    # -- features ---------------------------------------------------------------------------------------
    @property
    def image_keys(self) -> list[str]:
        return [k for k, shape in (self.input_shapes or {}).items() if len(shape) == 3]

    @property
    def action_dim(self) -> int:
        return self.output_shapes[ACTION][0]

    def delta_timestamps(self, fps: float) -> dict[str, list[float]]:
        """The windows this policy trains on, for `LeRobotDataset(..., delta_timestamps=...)`."""
        self.require_features()
        observed = self.observation_delta_indices
        windows = {} if observed is None else {key: [i / fps for i in observed] for key in self.input_shapes}
        windows[ACTION] = [i / fps for i in self.action_delta_indices]
        return windows

    def with_dataset_features(self, features: dict[str, dict]) -> PreTrainedConfig:
        """This config with shapes and modes left unset filled from a dataset's `meta/info.json` features,
        after checking that the dataset provides what the config asks for."""
        input_shapes = self.input_shapes or {
            key: _frame_shape(feature) for key, feature in features.items() if key.startswith("observation.")
        }
        output_shapes = self.output_shapes or (
            {ACTION: _frame_shape(features[ACTION])} if ACTION in features else {}
        )
        filled = dataclasses.replace(self, input_shapes=input_shapes, output_shapes=output_shapes)
        for key, shape in {**filled.input_shapes, **filled.output_shapes}.items():
            if key not in features:
                have = ", ".join(k for k in features if k.startswith("observation.") or k == ACTION)
                raise ObservationError(f"the policy needs '{key}', which the dataset lacks (it has: {have})")
            if list(shape) != _frame_shape(features[key]):
                raise ObservationError(
                    f"the policy expects '{key}' of shape {list(shape)}, the dataset has {_frame_shape(features[key])}"
                )
        return filled

    def require_features(self) -> None:
        if not self.input_shapes or not self.output_shapes or ACTION not in self.output_shapes:
            raise ValueError(
                f"{type(self).__name__} needs input_shapes and output_shapes={{'action': [Da]}}; "
                "give them, or fill them from a dataset with config.with_dataset_features(dataset.meta.features)"
            )

    # -- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"type": self.type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> PreTrainedConfig:
        data = dict(data)
        kind = data.pop("type", None)
        known = cls.get_known_choices()
        if kind not in known:
            raise CheckpointError(f"{source}: 'type' is {kind!r}, expected one of {', '.join(known)}")
        config_cls = known[kind]
        names = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown {kind} config fields {unknown}")
        try:
            return config_cls(**data)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: {error}") from error


def _frame_shape(feature: dict) -> list[int]:
    """A dataset feature's shape as a policy sees it: images [C, H, W], vectors [D]."""
    shape = list(feature["shape"])
    if feature["dtype"] in ("video", "image"):
        names = feature.get("names") or ["height", "width", "channels"]
        if list(names)[-1] in ("channels", "channel", "c"):
            return [shape[2], shape[0], shape[1]]
    return shape


def standardize_observation(
    observation: dict[str, Tensor], input_shapes: dict[str, list[int]], device: torch.device
) -> dict[str, Tensor]:
    """The policy's inputs as float32 tensors on `device`: (B, *shape) or (B, To, *shape).

    Images may come as the env gives them, uint8 (B, [To,] H, W, C) in [0, 255], or as the dataset
    gives them, float (B, [To,] C, H, W) in [0, 1]; they are returned as float (C, H, W) in [0, 1].
    """
    out = {}
    for key, shape in input_shapes.items():
        if key not in observation:
            raise ObservationError(
                f"observation is missing '{key}' (expected shape (B, {', '.join(map(str, shape))})); "
                f"it has: {', '.join(observation) or 'nothing'}"
            )
        value = torch.as_tensor(observation[key], device=device)
        shape = tuple(shape)
        if len(shape) == 3 and value.dtype == torch.uint8:
            if tuple(value.shape[-3:]) == (*shape[1:], shape[0]):
                value = value.movedim(-1, -3)  # (..., H, W, C) -> (..., C, H, W)
            value = value.float() / 255
        if tuple(value.shape[-len(shape) :]) != shape or value.ndim - len(shape) not in (1, 2):
            expected = f"(B, {', '.join(map(str, shape))})"
            if len(shape) == 3:
                expected += f" float in [0, 1], or (B, {shape[1]}, {shape[2]}, {shape[0]}) uint8"
            raise ObservationError(f"observation '{key}' has shape {tuple(value.shape)}, expected {expected}")
        out[key] = value.float()
    return out


def check_window(batch: dict[str, Tensor], key: str, length: int, delta_indices: list[int]) -> None:
    """A training batch must hold `key` as a (B, length, ...) window; say which delta_timestamps make it."""
    if key not in batch:
        raise ObservationError(f"the training batch is missing '{key}'; batch keys: {', '.join(batch)}")
    if batch[key].ndim < 3 or batch[key].shape[1] != length or key + PAD_SUFFIX not in batch:
        if batch[key].ndim >= 3 and batch[key].shape[1] == length:
            raise ObservationError(
                f"the training batch has '{key}' but not its padding mask '{key + PAD_SUFFIX}' (B, {length}), "
                "which LeRobotDataset(..., delta_timestamps=...) adds"
            )
        raise ObservationError(
            f"batch['{key}'] has shape {tuple(batch[key].shape)}, but the policy trains on windows of "
            f"{length} frames (frame offsets {delta_indices[0]}..{delta_indices[-1]}): build the dataset with "
            "LeRobotDataset(..., delta_timestamps=config.delta_timestamps(fps))"
        )


def stack_history(
    inputs: dict[str, Tensor], input_shapes: dict[str, list[int]], n_steps: int
) -> dict[str, Tensor]:
    """Standardized inputs with the observation-steps axis, (B, n_steps, *shape): a window of n_steps is used
    as given, a single step (B, *shape) is repeated n_steps times."""
    out = {}
    for key, shape in input_shapes.items():
        value = inputs[key]
        if value.ndim == len(shape) + 1:
            value = value.unsqueeze(1).expand(-1, n_steps, *shape)
        elif value.shape[1] != n_steps:
            raise ObservationError(f"'{key}' has {value.shape[1]} observation steps, expected {n_steps}")
        out[key] = value
    return out


class ObservationHistory:
    """The last `n_steps` observations of each input while acting, for policies that look back in time.

    After `reset()` the first observation fills the history: its own steps when it is a window (B, To, ...),
    its first step repeated where it is shorter, as the dataset pads a window at an episode's start.
    """

    def __init__(self, input_shapes: dict[str, list[int]], n_steps: int):
        self.input_shapes = input_shapes
        self.n_steps = n_steps
        self.reset()

    def reset(self) -> None:
        self.steps: dict[str, deque[Tensor]] = {key: deque(maxlen=self.n_steps) for key in self.input_shapes}

    def append(self, observation: dict[str, Tensor], device: torch.device) -> None:
        """Add an observation as a policy receives it, (B, [To,] *shape) per input (see standardize_observation)."""
        inputs = standardize_observation(observation, self.input_shapes, device)
        for key, queue in self.steps.items():
            is_window = inputs[key].ndim == len(self.input_shapes[key]) + 2
            steps = list(inputs[key].unbind(1)) if is_window else [inputs[key]]  # each (B, *shape)
            if queue:
                queue.append(steps[-1])
            else:
                queue.extend([steps[0]] * (self.n_steps - len(steps)) + steps)

    def window(self, keys: list[str] | None = None) -> dict[str, Tensor]:
        """The history of `keys` (default all) as the policy's inputs, each (B, n_steps, *shape)."""
        return {
            key: torch.stack(list(self.steps[key]), dim=1) for key in (self.steps if keys is None else keys)
        }


class PreTrainedPolicy(nn.Module):
    """Base of every policy: normalization from dataset statistics, `save_pretrained`, `from_pretrained`."""

    config_class: ClassVar[type[PreTrainedConfig]]
    # forward(batch) takes `<camera>.feature_map` (the trunk's features, see camera_features) for a camera
    accepts_feature_maps: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[PreTrainedPolicy]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:
            PreTrainedPolicy._registry[cls.config_class.get_choice_name(cls.config_class)] = cls

    def __init__(self, config: PreTrainedConfig, dataset_stats: dict[str, dict] | None = None):
        super().__init__()
        config.require_features()
        self.config = config
        self.normalize_inputs = Normalizer(
            config.input_shapes, config.input_normalization_modes, dataset_stats
        )
        self.normalize_targets = Normalizer(
            config.output_shapes, config.output_normalization_modes, dataset_stats
        )
        self.unnormalize_outputs = Normalizer(
            config.output_shapes, config.output_normalization_modes, dataset_stats, inverse=True
        )

    @staticmethod
    def policy_class(config: PreTrainedConfig) -> type[PreTrainedPolicy]:
        return PreTrainedPolicy._registry[config.type]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode for the block (no dropout, no CVAE, centre crops), then the previous mode again. A policy
        already in eval mode is left alone: switching walks every module, ~0.5 ms per call on a CPU."""
        if not self.training:
            yield
            return
        self.eval()
        try:
            yield
        finally:
            self.train()

    def inference_networks(self) -> list[nn.Module]:
        """The networks `predict_action_chunk` runs (what `compile_for_inference` compiles)."""
        raise NotImplementedError

    def compile_for_inference(self) -> None:
        """Compile the inference networks with torch.compile (inductor) in place; the first calls after it take
        seconds to tens of seconds (compiling, again for each new batch size), later ones run faster where the
        model is small enough for per-operation overhead to matter (benchmarks/RESULTS.md, "Speed levers")."""
        for network in self.inference_networks():
            network.compile()

    def camera_backbones(self) -> list[nn.Module]:
        """The vision trunks of the camera encoders (what `lr_backbone` and `policylab pretrain` act on)."""
        return []

    def camera_features(self, key: str, images: Tensor) -> Tensor:
        """Normalized frames of camera `key` (N, C, H, W) -> the trunk's feature map (N, C', h, w), resized and
        cropped as the policy does before its trunk."""
        raise NotImplementedError

    def freeze_camera_backbones(self) -> None:
        """Stop training the trunks: no gradient is computed through their weights (lr_backbone=0)."""
        for backbone in self.camera_backbones():
            backbone.requires_grad_(False)

    def optim_param_groups(self, lr: float, lr_backbone: float | None) -> list[dict]:
        """Parameter groups for the optimizer: the trunks in a group of their own at `lr_backbone` when given."""
        trunk = [p for b in self.camera_backbones() for p in b.parameters() if p.requires_grad]
        if lr_backbone is None or not trunk:
            return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]
        in_trunk = {id(p) for p in trunk}
        others = [p for p in self.parameters() if p.requires_grad and id(p) not in in_trunk]
        return [{"params": others, "lr": lr}, {"params": trunk, "lr": lr_backbone}]

    # -- saving and loading -------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` (statistics included) into the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "policy": self.config.type})
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, **config_overrides
    ) -> PreTrainedPolicy:
        """Load a policy saved by `save_pretrained`: a `pretrained_model` folder, a training checkpoint that
        holds one, or a training run (its newest checkpoint). `config_overrides` change inference-time
        fields, e.g. n_action_steps."""
        folder = pretrained_folder(path)
        config = read_config(folder / CONFIG_NAME)
        if config_overrides:
            unknown = sorted(set(config_overrides) - {f.name for f in dataclasses.fields(config)})
            if unknown:
                raise ValueError(f"{config.type} config has no fields {unknown}")
            config = dataclasses.replace(config, **config_overrides)
        policy_cls = cls.policy_class(config) if cls is PreTrainedPolicy else cls
        if policy_cls.config_class is not type(config):
            raise CheckpointError(f"{folder}: holds a '{config.type}' policy, not {policy_cls.__name__}")
        if written_by_lerobot(folder):
            from policylab.policies.lerobot_format import load_lerobot

            return load_lerobot(folder, config, policy_cls, device)
        policy = policy_cls(config.without_pretrained_weights())
        policy.config = config
        policy.load_state_dict(read_weights(folder / WEIGHTS_NAME, policy))
        policy.to(device or "cpu")
        policy.eval()
        return policy


def pretrained_folder(path: str | Path) -> Path:
    """The folder holding config.json for `path`: that folder itself, a training checkpoint (its
    pretrained_model), a training run (the pretrained_model of its checkpoints/last), or a Hugging Face hub id
    (`lerobot/diffusion_pusht`), downloaded into the hub cache."""
    path = Path(path)
    last = Path(CHECKPOINTS_DIR, LAST_CHECKPOINT, PRETRAINED_MODEL_DIR)
    for candidate in (path, path / PRETRAINED_MODEL_DIR, path / last):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if not path.exists() and HUB_ID.match(str(path)):
        return _download(str(path))
    raise CheckpointError(
        f"{path}: no {CONFIG_NAME} here, in {PRETRAINED_MODEL_DIR}/ or in {last}/; "
        "give a training run folder, a checkpoint folder, a pretrained_model folder or a hub id (org/name)"
    )


def _download(repo_id: str) -> Path:
    """A policy from the Hugging Face hub, as the hub client caches it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"], etag_timeout=5))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as error:
        raise CheckpointError(
            f"{repo_id}: not a folder here, and the Hugging Face hub cannot be reached to download it "
            f"({type(error).__name__}: offline?); download it where the hub is reachable, or give a local folder"
        ) from None
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{repo_id}: downloaded from the hub to {folder}, but it has no {CONFIG_NAME}")
    return folder


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_config(path: Path) -> PreTrainedConfig:
    """The config of a checkpoint policylab wrote, or of one LeRobot wrote (translated)."""
    data = _read_json_object(path)
    from policylab.policies.lerobot_format import config_from_lerobot, is_lerobot_config

    if is_lerobot_config(data):
        return config_from_lerobot(data, source=str(path))
    return PreTrainedConfig.from_dict(data, source=str(path))


def written_by_lerobot(folder: Path) -> bool:
    from policylab.policies.lerobot_format import is_lerobot_config

    return is_lerobot_config(_read_json_object(folder / CONFIG_NAME))


def read_weights(path: Path, module: nn.Module) -> dict[str, Tensor]:
    """Tensors of a safetensors file, checked against `module`'s state dict by name and shape."""
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, the config gives {tuple(expected[key].shape)}"
            )
    return state
