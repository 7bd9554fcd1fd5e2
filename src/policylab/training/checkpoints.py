"""Checkpoints: `OUT/checkpoints/<step>/{pretrained_model,training_state}/` and `OUT/checkpoints/last`.

    pretrained_model/   config.json + model.safetensors: what `Policy.from_pretrained` loads (with EMA,
                        the averaged weights, which are the ones to evaluate)
    training_state/     state.json           step, scheduler, optimizer hyper-parameters, Python/NumPy RNGs
                        optimizer.safetensors AdamW moments, keyed "<param index>.<name>"
                        rng.safetensors       torch CPU (and CUDA) generator states
                        model.safetensors     the raw (non-averaged) weights, only when EMA is on
                        head.safetensors      a pretraining head's weights (`policylab pretrain` only)

A checkpoint is written into a temporary folder and renamed into place, then `last` (a relative symlink)
is swapped atomically, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from policylab.constants import (
    CHECKPOINTS_DIR,
    HEAD_WEIGHTS,
    LAST_CHECKPOINT,
    PRETRAINED_MODEL_DIR,
    TRAINING_STATE_DIR,
)
from policylab.policies import CheckpointError, PreTrainedPolicy
from policylab.policies.pretrained import WEIGHTS_NAME, read_weights


@dataclass
class TrainingState:
    """What the loop needs besides the policy to continue exactly where it stopped."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: object | None = None  # diffusers.training_utils.EMAModel
    scaler: torch.amp.GradScaler | None = None  # float16 mixed precision only
    train_seconds: float = 0.0  # in the training loop and feature caching, over every resumed session
    head: torch.nn.Module | None = None  # an objective's own trained module (a pretraining head), kept here


def save_command_config(output_dir: Path, config, name: str) -> None:
    """Write a command's settings (a config dataclass) as `output_dir/name` when the run is new, so that
    `--resume=true` reads them back; a run with a checkpoint keeps the file it started with."""
    if last_checkpoint(output_dir) is None:
        output_dir.mkdir(parents=True, exist_ok=True)
        saved = {**dataclasses.asdict(config), "output_dir": str(output_dir), "resume": False}
        (output_dir / name).write_text(json.dumps(saved, indent=2) + "\n")


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"{step:06d}"


def last_checkpoint(output_dir: Path) -> Path | None:
    link = output_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
    return link.resolve() if link.exists() else None


def save_checkpoint(output_dir: Path, step: int, policy: PreTrainedPolicy, state: TrainingState) -> Path:
    """Write the checkpoint of `step` atomically and point `last` at it."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    _write_pretrained(tmp / PRETRAINED_MODEL_DIR, policy, state.ema)
    _write_training_state(tmp / TRAINING_STATE_DIR, step, policy, state)
    if final.exists():  # a resumed run saving a step again: move the old one aside first
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    point_link(output_dir, LAST_CHECKPOINT, step)
    return final


def point_link(output_dir: Path, name: str, step: int) -> None:
    """Atomically point OUT/checkpoints/<name> (last, best) at the checkpoint of `step`."""
    final = checkpoint_dir(output_dir, step)
    link_tmp = final.parent / f".{name}-tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, final.parent / name)


def _write_pretrained(folder: Path, policy: PreTrainedPolicy, ema) -> None:
    if ema is None:
        policy.save_pretrained(folder)
        return
    ema.store(policy.parameters())
    ema.copy_to(policy.parameters())
    try:
        policy.save_pretrained(folder)
    finally:
        ema.restore(policy.parameters())


def _write_training_state(folder: Path, step: int, policy: PreTrainedPolicy, state: TrainingState) -> None:
    folder.mkdir(parents=True)
    optimizer = state.optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        if torch.is_tensor(value)
        else torch.tensor(value)
        for index, moments in optimizer["state"].items()
        for name, value in moments.items()
    }
    save_file(tensors, str(folder / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(folder / "rng.safetensors"))
    if state.ema is not None:
        raw = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
        save_file(raw, str(folder / WEIGHTS_NAME))
    if state.head is not None:
        head = {k: v.detach().cpu().contiguous() for k, v in state.head.state_dict().items()}
        save_file(head, str(folder / HEAD_WEIGHTS))
    numpy_state, python_state = np.random.get_state(), random.getstate()
    info = {
        "step": step,
        "train_seconds": state.train_seconds,
        "optimizer_param_groups": optimizer["param_groups"],
        "scheduler": state.scheduler.state_dict(),
        "ema_optimization_step": None if state.ema is None else int(state.ema.optimization_step),
        "ema_decay": None if state.ema is None else state.ema.decay,
        "grad_scaler": None if state.scaler is None else state.scaler.state_dict(),
        "python_rng": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    (folder / "state.json").write_text(json.dumps(info))


def load_checkpoint(checkpoint: Path, policy: PreTrainedPolicy, state: TrainingState) -> int:
    """Restore policy weights, optimizer, scheduler, EMA and RNGs from `checkpoint`; returns its step.
    Any unreadable or inconsistent file raises `CheckpointError` naming it."""
    folder = checkpoint / TRAINING_STATE_DIR
    info = _read_json(folder / "state.json")
    try:
        _restore(checkpoint, folder, info, policy, state)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{folder}: does not fit this run ({type(error).__name__}: {error})") from error
    return int(info["step"])


def _restore(
    checkpoint: Path, folder: Path, info: dict, policy: PreTrainedPolicy, state: TrainingState
) -> None:
    averaged = read_weights(checkpoint / PRETRAINED_MODEL_DIR / WEIGHTS_NAME, policy)
    saved_decay, decay = info.get("ema_decay"), None if state.ema is None else state.ema.decay
    if (state.ema is None) != (info["ema_optimization_step"] is None) or saved_decay != decay:
        raise CheckpointError(
            f"{folder}: the run was trained with --training.ema_decay={saved_decay or 0}; resume with the same"
        )
    if state.ema is None:
        policy.load_state_dict(averaged)
    else:
        policy.load_state_dict(read_weights(folder / WEIGHTS_NAME, policy))
        state.ema.shadow_params = [
            averaged[name].clone().to(p.device) for name, p in policy.named_parameters()
        ]
        state.ema.optimization_step = info["ema_optimization_step"]

    if state.head is not None:
        state.head.load_state_dict(_read_safetensors(folder / HEAD_WEIGHTS))
    optimizer_state: dict[int, dict] = {}
    for key, value in _read_safetensors(folder / "optimizer.safetensors").items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    state.optimizer.load_state_dict(
        {"state": optimizer_state, "param_groups": info["optimizer_param_groups"]}
    )
    state.scheduler.load_state_dict(info["scheduler"])
    state.train_seconds = float(info.get("train_seconds", 0.0))
    if state.scaler is not None and info.get("grad_scaler"):
        state.scaler.load_state_dict(info["grad_scaler"])

    rng = _read_safetensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, keys, gauss = info["python_rng"]
    random.setstate((version, tuple(keys), gauss))
    kind, key, pos, has_gauss, cached = info["numpy_rng"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, cached))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: missing or corrupt ({error})") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path}: missing or corrupt ({error})") from error
