"""Checkpoints written by LeRobot, read as policylab policies that act as LeRobot's do.

A LeRobot `pretrained_model/` folder holds `config.json` (LeRobot's field names: `input_features`,
`normalization_mapping`, ...) and `model.safetensors` (LeRobot's module names). The normalization statistics are

    LeRobot 0.3.x   buffers inside model.safetensors (`normalize_inputs.buffer_observation_state.mean`, ...)
    LeRobot 0.6.x   the state files of its processors, named in policy_preprocessor.json and
                    policy_postprocessor.json (`observation.state.mean`, ...)

Reading one translates the config, renames the weights to policylab's modules (the networks are the same: only
names differ, and Diffusion's condition order where a policy has both cameras and an environment state), and
builds the normalizers from those statistics. A feature type LeRobot's `normalization_mapping` leaves out (PushT's
ENV keypoints, for instance) is not normalized, as in LeRobot. DDIM and DDPM visit the steps LeRobot's
schedulers do (`timestep_spacing="leading"`, diffusers' default).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from policylab.policies.backbones import RESNETS
from policylab.policies.pretrained import CheckpointError, PreTrainedConfig
from policylab.utils.files import write_json

PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"
NORMALIZERS = ("normalize_inputs", "normalize_targets", "unnormalize_outputs")
MODES = {"MEAN_STD": "mean_std", "MIN_MAX": "min_max", "IDENTITY": "identity"}
RESNET_CHILDREN = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
COMMON_FIELDS = ("n_obs_steps", "n_action_steps", "vision_backbone")
ACT_FIELDS = (
    "chunk_size", "replace_final_stride_with_dilation", "pre_norm", "dim_model", "n_heads", "dim_feedforward",
    "feedforward_activation", "n_encoder_layers", "n_decoder_layers", "use_vae", "latent_dim",
    "n_vae_encoder_layers", "temporal_ensemble_coeff", "dropout", "kl_weight",
)  # fmt: skip
DIFFUSION_FIELDS = (
    "horizon", "resize_shape", "use_group_norm", "crop_shape", "crop_is_random", "spatial_softmax_num_keypoints",
    "use_separate_rgb_encoder_per_camera", "down_dims", "kernel_size", "n_groups", "diffusion_step_embed_dim",
    "use_film_scale_modulation", "noise_scheduler_type", "num_train_timesteps", "beta_schedule", "beta_start",
    "beta_end", "prediction_type", "clip_sample", "clip_sample_range", "num_inference_steps",
    "do_mask_loss_for_padding", "drop_n_last_frames",
)  # fmt: skip


def is_lerobot_config(data: dict) -> bool:
    return "input_features" in data and "input_shapes" not in data


def lerobot_version(folder: Path) -> str:
    """'0.6' (processor files), '0.3' (statistics inside the weights), or a CheckpointError naming the files."""
    if (folder / PREPROCESSOR).is_file():
        return "0.6"
    weights = folder / "model.safetensors"
    try:
        names = load_file(str(weights)).keys()
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from None
    if any(name.startswith(NORMALIZERS) for name in names):
        return "0.3"
    raise CheckpointError(
        f"{folder}: a LeRobot checkpoint in a layout policylab does not know: its normalization statistics are neither "
        f"in {PREPROCESSOR} and its state files (LeRobot 0.4-0.6) nor in model.safetensors (LeRobot 0.2-0.3)"
    )


def config_from_lerobot(data: dict, source: str) -> PreTrainedConfig:
    """policylab's config for LeRobot's config.json `data` (ACT or Diffusion)."""
    kind = data.get("type")
    if kind not in ("act", "diffusion"):
        raise CheckpointError(
            f"{source}: a LeRobot '{kind}' policy; policylab reads LeRobot's act and diffusion"
        )
    fields = ACT_FIELDS if kind == "act" else DIFFUSION_FIELDS
    values = {name: data[name] for name in (*COMMON_FIELDS, *fields) if name in data}
    if kind == "diffusion":
        if data.get("crop_shape") is None and data.get("crop_ratio", 1.0) != 1.0:
            raise CheckpointError(
                f"{source}: crop_ratio={data['crop_ratio']} (LeRobot 0.6) is not supported; only crop_shape"
            )
        values["timestep_spacing"] = "leading"  # diffusers' default, what LeRobot's schedulers use
        values["pretrained_backbone_weights"] = None  # the checkpoint holds every weight
    mapping = data.get("normalization_mapping") or {}
    features = {**data["input_features"], **data["output_features"]}
    modes = {
        key: MODES[mapping[f["type"]]] if f["type"] in mapping else "identity" for key, f in features.items()
    }
    config_cls = PreTrainedConfig.get_known_choices()[kind]
    try:
        return config_cls(
            input_shapes={key: list(f["shape"]) for key, f in data["input_features"].items()},
            output_shapes={key: list(f["shape"]) for key, f in data["output_features"].items()},
            input_normalization_modes={key: modes[key] for key in data["input_features"]},
            output_normalization_modes={key: modes[key] for key in data["output_features"]},
            **values,
        )
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{source}: cannot be read as a policylab {kind} config ({error})") from None


def statistics(folder: Path, version: str) -> dict[str, dict[str, torch.Tensor]]:
    """Feature -> {"mean", "std", "min", "max", ...} as LeRobot normalizes with them."""
    stats: dict[str, dict[str, torch.Tensor]] = {}
    if version == "0.3":
        for name, value in load_file(str(folder / "model.safetensors")).items():
            match = re.match(rf"({'|'.join(NORMALIZERS)})\.buffer_(.+)\.(\w+)$", name)
            if match:
                stats.setdefault(match.group(2), {})[match.group(3)] = value
        return {_feature_key(flat, folder): s for flat, s in stats.items()}
    for pipeline in (PREPROCESSOR, POSTPROCESSOR):
        steps = json.loads((folder / pipeline).read_text())["steps"]
        for step in steps:
            if "normalizer" in step["registry_name"] and step.get("state_file"):
                for name, value in load_file(str(folder / step["state_file"])).items():
                    key, stat = name.rsplit(".", 1)
                    stats.setdefault(key, {})[stat] = value
    return stats


def _feature_key(flat: str, folder: Path) -> str:
    """LeRobot 0.3 names a buffer after its feature with dots as underscores: find the feature again."""
    config = json.loads((folder / "config.json").read_text())
    for key in (*config["input_features"], *config["output_features"]):
        if key.replace(".", "_") == flat:
            return key
    return flat


def _rename(name: str, config: PreTrainedConfig) -> str:
    """LeRobot's module name -> policylab's."""
    if config.type == "act":
        name = re.sub(r"\.layers\.(\d+)\.linear([12])\.", r".layers.\1.feedforward.linear\2.", name)
        name = name.replace(".multihead_attn.", ".cross_attn.")
    else:
        name = name.replace("diffusion.unet.", "unet.")
        name = re.sub(r"diffusion_step_encoder\.1\.", "diffusion_step_encoder.mlp.0.", name)
        name = re.sub(r"diffusion_step_encoder\.3\.", "diffusion_step_encoder.mlp.2.", name)
        name = re.sub(r"\.(conv1|conv2)\.block\.", r".\1.", name)
        name = name.replace("final_conv.0.block.", "final_conv.0.")
        name = re.sub(r"^diffusion\.rgb_encoder\.(\d+)\.", r"observation_encoder.rgb_encoders.\1.", name)
        name = name.replace("diffusion.rgb_encoder.", "observation_encoder.rgb_encoders.0.")
        name = name.replace(".pool.nets.", ".pool.keypoint_maps.").replace(".pool.pos_grid", ".pool.grid")
        name = re.sub(r"\.out\.(weight|bias)$", r".out.0.\1", name)
    for child, index in RESNET_CHILDREN.items():  # LeRobot's ACT keeps the ResNet's child names
        name = name.replace(f"model.backbone.{child}.", f"model.backbone.{index}.")
    return name


def weights_from_lerobot(folder: Path, config: PreTrainedConfig) -> dict[str, torch.Tensor]:
    """LeRobot's network weights under policylab's names (normalization buffers left out)."""
    state = load_file(str(folder / "model.safetensors"))
    weights = {_rename(k, config): v for k, v in state.items() if not k.startswith(NORMALIZERS)}
    if config.type == "diffusion":
        _reorder_condition(weights, config)
    return weights


def _reorder_condition(weights: dict[str, torch.Tensor], config, to: str = "policylab") -> None:
    """LeRobot conditions the UNet on [state, cameras, environment state] per observation step, policylab on
    [state, environment state, cameras]: permute the condition's columns of every FiLM layer into the order of
    `to` (policylab or lerobot), from the other one."""
    shapes = config.input_shapes
    state = shapes.get("observation.state", [0])[0]
    env = shapes.get("observation.environment_state", [0])[0]
    cameras = 2 * config.spatial_softmax_num_keypoints * len(config.image_keys)
    if not (env and cameras):
        return
    per_step = state + cameras + env
    first = cameras if to == "policylab" else env  # the block after the state in the order weights are in now
    source = list(range(state)) + list(range(state + first, per_step)) + list(range(state, state + first))
    order = [step * per_step + i for step in range(config.n_obs_steps) for i in source]
    for key in [k for k in weights if k.endswith("cond_encoder.1.weight")]:
        w = weights[key]
        embed = w.shape[1] - len(order)  # the diffusion-step embedding's columns come first
        weights[key] = torch.cat([w[:, :embed], w[:, embed:][:, order]], dim=1)


def load_lerobot(folder: Path, config: PreTrainedConfig, policy_cls, device) -> object:
    """The policy of a LeRobot checkpoint folder, its weights and statistics in place."""
    version = lerobot_version(folder)
    stats = statistics(folder, version)
    for key in (*config.input_shapes, *config.output_shapes):
        mode = {**config.input_normalization_modes, **config.output_normalization_modes}[key]
        if mode != "identity" and key not in stats:
            raise CheckpointError(
                f"{folder}: LeRobot {version} checkpoint without normalization statistics for '{key}'"
            )
    policy = policy_cls(config.without_pretrained_weights(), dataset_stats=stats)
    policy.config = config
    weights = weights_from_lerobot(folder, config)
    expected = {k for k in policy.state_dict() if not k.startswith(NORMALIZERS)}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{folder / 'model.safetensors'}: LeRobot {version} weights that policylab's {config.type} does not map: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    policy.load_state_dict(weights, strict=False)
    policy.lerobot_version = version
    return policy.to(device or "cpu").eval()


# -- the other way: a policylab policy in LeRobot 0.6's layout -----------------------------------------------

FEATURE_TYPES = {"observation.state": "STATE", "observation.environment_state": "ENV", "action": "ACTION"}
POLICYLAB_ONLY = {  # fields LeRobot's policies lack, with the value that makes a policy act as LeRobot's
    "act": {"n_obs_steps": 1, "resize_shape": None},
    "diffusion": {"n_res_blocks": 2, "n_mid_res_blocks": 2, "pretrained_backbone_weights": None},
}


def _feature_type(key: str) -> str:
    return FEATURE_TYPES.get(key, "VISUAL")


def _inverse_rename(name: str, config: PreTrainedConfig) -> str:
    """policylab's module name -> LeRobot's (the inverse of `_rename`)."""
    for child, index in RESNET_CHILDREN.items():
        name = name.replace(f"model.backbone.{index}.", f"model.backbone.{child}.")
    if config.type == "act":
        name = re.sub(r"\.feedforward\.linear([12])\.", r".linear\1.", name)
        return name.replace(".cross_attn.", ".multihead_attn.")
    name = name.replace("diffusion_step_encoder.mlp.0.", "diffusion_step_encoder.1.")
    name = name.replace("diffusion_step_encoder.mlp.2.", "diffusion_step_encoder.3.")
    name = re.sub(r"\.(conv1|conv2)\.(\d)\.", r".\1.block.\2.", name)
    name = name.replace("final_conv.0.0.", "final_conv.0.block.0.").replace(
        "final_conv.0.1.", "final_conv.0.block.1."
    )
    name = name.replace(".pool.keypoint_maps.", ".pool.nets.").replace(".pool.grid", ".pool.pos_grid")
    name = re.sub(r"\.out\.0\.(weight|bias)$", r".out.\1", name)
    if name.startswith("observation_encoder.rgb_encoders."):
        index, rest = name[len("observation_encoder.rgb_encoders.") :].split(".", 1)
        name = (
            f"diffusion.rgb_encoder.{index}.{rest}"
            if config.use_separate_rgb_encoder_per_camera
            else f"diffusion.rgb_encoder.{rest}"
        )
    return name.replace("unet.", "diffusion.unet.", 1) if name.startswith("unet.") else name


def check_exportable(config: PreTrainedConfig) -> None:
    """Refuse what LeRobot would run differently, naming the field."""
    if config.vision_backbone not in RESNETS:
        raise CheckpointError(
            f"vision_backbone={config.vision_backbone!r}: LeRobot's {config.type} has only ResNets"
        )
    for name, value in POLICYLAB_ONLY[config.type].items():
        if getattr(config, name) != value:
            raise CheckpointError(
                f"{name}={getattr(config, name)!r}: LeRobot's {config.type} has no such option (only {value!r})"
            )
    if (
        config.type == "diffusion"
        and config.inference_steps < config.num_train_timesteps
        and config.timestep_spacing != "leading"
    ):
        raise CheckpointError(
            f"timestep_spacing={config.timestep_spacing!r} with {config.inference_steps} of {config.num_train_timesteps} "
            "steps: LeRobot's schedulers visit the 'leading' steps; export with --policy.timestep_spacing=leading"
        )
    modes: dict[str, set[str]] = {}
    for key, mode in {**config.input_normalization_modes, **config.output_normalization_modes}.items():
        modes.setdefault(_feature_type(key), set()).add(mode)
    mixed = {kind: sorted(m) for kind, m in modes.items() if len(m) > 1}
    if mixed:
        raise CheckpointError(
            f"LeRobot normalizes every feature of one type alike; this policy mixes {mixed}"
        )


def export_to_lerobot(policy, folder: Path) -> list[Path]:
    """Write `policy` as a LeRobot 0.6 `pretrained_model/` folder (config.json, model.safetensors and the pre- and
    post-processors with the normalization statistics); returns the files written."""
    from safetensors.torch import save_file

    config = policy.config
    check_exportable(config)
    folder.mkdir(parents=True, exist_ok=True)
    modes = {**config.input_normalization_modes, **config.output_normalization_modes}
    mapping = {_feature_type(k): m.upper() for k, m in modes.items() if m != "identity"}
    features = {
        key: {"type": _feature_type(key), "shape": list(shape)} for key, shape in config.input_shapes.items()
    }
    outputs = {key: {"type": "ACTION", "shape": list(shape)} for key, shape in config.output_shapes.items()}
    fields = ACT_FIELDS if config.type == "act" else DIFFUSION_FIELDS
    data = {"type": config.type, **{name: getattr(config, name) for name in (*COMMON_FIELDS, *fields)},
            "input_features": features, "output_features": outputs, "normalization_mapping": mapping,
            "pretrained_backbone_weights": None, "device": "cpu", "use_amp": False, "push_to_hub": False}  # fmt: skip
    write_json(folder / "config.json", data, indent=4)
    state = policy.state_dict()
    weights = {
        _inverse_rename(k, config): v.contiguous() for k, v in state.items() if not k.startswith(NORMALIZERS)
    }
    if config.type == "diffusion":
        _reorder_condition(weights, config, to="lerobot")
    save_file(weights, str(folder / "model.safetensors"))
    stats = {}
    for normalizer in (policy.normalize_inputs, policy.normalize_targets):
        for name, value in normalizer.state_dict().items():
            key, stat = name.split("__")
            stats[f"{next(k for k in modes if k.replace('.', '_') == key)}.{stat}"] = value.contiguous()
    written = [folder / "config.json", folder / "model.safetensors"]
    for name, steps in _processor_steps(features, outputs, mapping).items():
        write_json(folder / f"{name}.json", {"name": name, "steps": steps})
        written.append(folder / f"{name}.json")
        for step in steps:
            if "state_file" in step:
                keys = step["config"]["features"]
                save_file(
                    {k: v for k, v in stats.items() if k.rsplit(".", 1)[0] in keys},
                    str(folder / step["state_file"]),
                )
                written.append(folder / step["state_file"])
    return written


def _processor_steps(inputs: dict, outputs: dict, mapping: dict) -> dict[str, list[dict]]:
    """The steps of LeRobot 0.6's policy_preprocessor and policy_postprocessor (as `lerobot-train` writes them)."""
    normalizer = {"eps": 1e-08, "features": {**inputs, **outputs}, "norm_map": mapping}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    return {
        "policy_preprocessor": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            device,
            {
                "registry_name": "normalizer_processor",
                "config": normalizer,
                "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
            },
        ],  # fmt: skip
        "policy_postprocessor": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {**normalizer, "features": outputs},
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            device,
        ],  # fmt: skip
    }
