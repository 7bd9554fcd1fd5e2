"""The training loop behind `policylab train`: one engine for every policy.

    dataset (windows from the policy config) -> policy (built with the dataset's statistics)
    -> AdamW + schedule (the policy's preset, overridable) -> steps with clipping, EMA, AMP
    -> metrics.jsonl, checkpoints, optional evaluation callbacks

Data-parallel runs start under `torchrun` (one process per GPU or CPU slot); the loop wraps the policy in
DistributedDataParallel, gives each process its share of every global batch, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from policylab.constants import BEST_CHECKPOINT, SPLIT_FILE, TRAIN_CONFIG
from policylab.datasets import LeRobotDataset, LeRobotDatasetMetadata, resolve_dataset_root
from policylab.errors import ConfigError, PolicylabError
from policylab.policies import PreTrainedConfig, PreTrainedPolicy
from policylab.runs import Checkpoint, checked_output_dir
from policylab.training.checkpoints import (
    TrainingState,
    checkpoint_dir,
    last_checkpoint,
    load_checkpoint,
    point_link,
    save_checkpoint,
)
from policylab.training.configs import LOGGERS, SCHEDULERS, TrainConfig
from policylab.training.data import StepBatchSampler, make_dataloader, scale_camera_frames, steps_per_epoch
from policylab.training.feature_cache import serve_feature_maps
from policylab.training.metrics import MetricsLog, RunningMeans
from policylab.training.precision import mixed_precision
from policylab.training.validation import Validation
from policylab.utils.device import select_device
from policylab.utils.files import write_json
from policylab.utils.interrupts import deferred_interrupts
from policylab.utils.memory import process_peak_mb

TIMED_STEPS = 10  # after these (and a first, warm-up step) train says how long the whole run will take
Evaluate = Callable[[PreTrainedPolicy], dict]


class TrainingError(PolicylabError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class Hyperparameters:
    """The optimizer settings a run uses: flags where given, else the policy's preset."""

    steps: int
    lr: float
    lr_backbone: float | None
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    scheduler: str
    warmup_steps: int
    ema_decay: float | None


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun set up (WORLD_SIZE > 1), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_config(config: TrainConfig) -> None:
    """Reject flag values that cannot work, before any data is read."""
    t = config.training
    if (t.steps is None) == (t.num_epochs is None):
        raise ConfigError("give exactly one of --training.steps and --training.num_epochs")
    if config.dataset.repo_id is None and config.dataset.root is None:
        raise ConfigError(
            "give --dataset.repo_id=NAME (a recorded or downloaded dataset) or --dataset.root=DIR"
        )

    def at_least(value, low) -> bool:
        return value is None or value >= low

    problems = {
        "--training.steps": (at_least(t.steps, 1), "at least 1"),
        "--training.num_epochs": (at_least(t.num_epochs, 1), "at least 1"),
        "--training.batch_size": (t.batch_size >= 1, "at least 1"),
        "--training.log_freq": (t.log_freq >= 1, "at least 1"),
        "--training.save_freq": (t.save_freq >= 1, "at least 1"),
        "--training.eval_freq": (t.eval_freq >= 0, "0 (never) or more"),
        "--training.eval_episodes": (t.eval_episodes >= 1, "at least 1"),
        "--training.grad_clip_norm": (t.grad_clip_norm >= 0, "0 (no clipping) or more"),
        "--training.num_workers": (at_least(t.num_workers, 0), "0 or more"),
        "--training.warmup_steps": (at_least(t.warmup_steps, 0), "0 or more"),
        "--training.weight_decay": (at_least(t.weight_decay, 0), "0 or more"),
        "--training.lr": (t.lr is None or t.lr > 0, "positive"),
        "--training.lr_backbone": (at_least(t.lr_backbone, 0), "0 (frozen) or more"),
        "--training.ema_decay": (t.ema_decay is None or 0 <= t.ema_decay < 1, "in [0, 1) (0: no EMA)"),
        "--training.max_minutes": (t.max_minutes is None or t.max_minutes > 0, "positive"),
        "--training.val_freq": (at_least(t.val_freq, 1), "at least 1"),
        "--training.val_batches": (t.val_batches >= 1, "at least 1"),
    }
    for flag, (ok, expected) in problems.items():
        if not ok:
            raise ConfigError(f"{flag}: must be {expected}")
    if t.log == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--training.log=tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
    if t.scheduler is not None and t.scheduler not in SCHEDULERS:
        raise ConfigError(f"--training.scheduler={t.scheduler}: expected one of {', '.join(SCHEDULERS)}")
    if t.log not in LOGGERS:
        raise ConfigError(f"--training.log={t.log}: expected one of {', '.join(LOGGERS)}")
    if t.cache_features and t.lr_backbone != 0:
        raise ConfigError(
            "--training.cache_features=true computes a frozen trunk's features once: freeze it with "
            "--training.lr_backbone=0 (or pretrain it with --pretrain.steps, which freezes it)"
        )
    if t.betas is not None and len(t.betas) != 2:
        raise ConfigError(f"--training.betas: expected two values like [0.9,0.999], got {t.betas}")


def resolve_hyperparameters(
    config: TrainConfig, policy_config: PreTrainedConfig, num_frames: int, world: int
) -> Hyperparameters:
    t, preset = config.training, policy_config.training_preset()
    steps = t.steps or t.num_epochs * steps_per_epoch(num_frames, t.batch_size, world)
    ema_decay = preset.ema_decay if t.ema_decay is None else (t.ema_decay or None)
    return Hyperparameters(
        steps=steps,
        lr=t.lr if t.lr is not None else preset.lr,
        lr_backbone=t.lr_backbone if t.lr_backbone is not None else preset.lr_backbone,
        weight_decay=t.weight_decay if t.weight_decay is not None else preset.weight_decay,
        betas=tuple(t.betas) if t.betas is not None else tuple(preset.betas),
        eps=preset.eps,
        scheduler=t.scheduler or preset.scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else preset.warmup_steps,
        ema_decay=ema_decay,
    )


def make_training_state(
    policy: PreTrainedPolicy,
    hyper: Hyperparameters,
    device: torch.device,
    head: torch.nn.Module | None = None,
) -> TrainingState:
    """Optimizer, schedule and EMA of `policy` (and of an objective's `head`, trained at lr alongside it)."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    if hyper.lr_backbone == 0:
        policy.freeze_camera_backbones()
    groups = policy.optim_param_groups(hyper.lr, hyper.lr_backbone)
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": hyper.lr})
    optimizer = torch.optim.AdamW(
        groups,
        lr=hyper.lr,
        betas=hyper.betas,
        eps=hyper.eps,
        weight_decay=hyper.weight_decay,
        # one kernel for all parameters instead of a loop over them (benchmarks/RESULTS.md, "Speed levers")
        fused=device.type in ("cuda", "cpu"),
    )
    name = "constant_with_warmup" if hyper.scheduler == "constant" else "cosine"
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=hyper.warmup_steps, num_training_steps=hyper.steps
    )
    ema = None
    if hyper.ema_decay is not None:  # Diffusion Policy's EMA: decay warms up as 1 - (1 + step)^-0.75
        ema = EMAModel(policy.parameters(), decay=hyper.ema_decay, use_ema_warmup=True, power=0.75)
    return TrainingState(optimizer, scheduler, ema, head=head)


def prepare_output_dir(config: TrainConfig, output_dir: Path, saved_path: Path) -> Path | None:
    """The checkpoint to resume from (None for a new run); refuses to mix two runs in one folder."""
    checkpoint = last_checkpoint(output_dir)
    if not config.resume:
        if checkpoint is not None:  # a run that never saved a checkpoint has nothing to lose: start again
            raise ConfigError(
                f"--output_dir={output_dir} already holds a training run; continue it with --resume=true, "
                "or choose a new --output_dir"
            )
        return None
    if checkpoint is None or not saved_path.is_file():
        missing = "checkpoints/last" if checkpoint is None else TRAIN_CONFIG
        raise ConfigError(f"--resume=true: {output_dir} has no {missing} to resume from")
    saved = json.loads(saved_path.read_text())
    # through the config class: a field added to policylab since the run started compares as its default
    saved["policy"] = PreTrainedConfig.from_dict(saved["policy"], source=str(saved_path)).to_dict()
    saved = json.loads(json.dumps(saved))  # tuples as lists, as in the saved file
    current_config = json.loads(json.dumps(_config_dict(config)))
    for part in ("policy", "dataset"):
        current = current_config[part]
        changed = sorted(k for k in {*current, *saved[part]} if current.get(k) != saved[part].get(k))
        if changed:
            raise ConfigError(
                f"--resume=true: the run in {output_dir} was trained with other --{part}.* settings "
                f"({', '.join(changed)}); resume with the same ones or choose a new --output_dir"
            )
    return checkpoint


def weights_to_start_from(path: str, policy: PreTrainedPolicy, report: bool) -> dict[str, torch.Tensor]:
    """The weights of the trained policy at `path` (--init_from) that `policy` has, names and shapes checked;
    those of layers `policy` lacks are left out (and listed when `report`)."""
    trained = Checkpoint.resolve(path, "--init_from").load("cpu")
    if trained.config.type != policy.config.type:
        raise ConfigError(
            f"--init_from={path} is a policy of type {trained.config.type!r}; this run trains {policy.config.type!r}"
        )
    available, needed = trained.state_dict(), policy.state_dict()
    missing = [key for key in needed if key not in available]
    if missing:
        raise ConfigError(
            f"--init_from={path} has no weights for {len(missing)} tensors of this network (e.g. {missing[0]}): "
            "it can start a network with the same layers or fewer, not more"
        )
    for key, value in needed.items():
        if available[key].shape != value.shape:
            raise ConfigError(
                f"--init_from={path}: {key} has shape {list(available[key].shape)} there and "
                f"{list(value.shape)} in this network (check --policy.* sizes)"
            )
    if report:
        left_out = _modules_of([key for key in available if key not in needed], kept=needed)
        detail = f"; left out, not in this network: {', '.join(left_out)}" if left_out else ""
        print(f"starting from the weights of {path} ({len(needed)} tensors{detail})", file=sys.stderr)
    return {key: available[key] for key in needed}


def _modules_of(keys: list[str], kept) -> list[str]:
    """The shortest dotted prefixes covering `keys` and none of `kept`: the dropped modules, by name."""
    modules = set()
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            prefix = ".".join(parts[:n])
            if not any(k == prefix or k.startswith(prefix + ".") for k in kept):
                modules.add(prefix)
                break
    return sorted(modules)


def _config_dict(config: TrainConfig) -> dict:
    out = dataclasses.asdict(config)
    out["policy"] = config.policy.to_dict()
    return out


def train(
    config: TrainConfig,
    evaluate: Evaluate | None = None,
    objective: Callable[[PreTrainedPolicy], torch.nn.Module] | None = None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Run (or resume) the training described by `config`; returns the output folder.

    `evaluate(policy) -> metrics` is called every `training.eval_freq` steps (with the EMA weights when
    EMA is on) and its result is logged.
    `objective(policy)` gives the module whose `forward(batch)["loss"]` is minimized (default: the policy's
    own loss); the policy is what is optimized and saved, with the objective's `head` module if it has one
    (trained at lr, kept in the training state). `initial_weights` start a new run (not a resumed one).
    """
    check_config(config)
    device = select_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    autocast, scaler = mixed_precision(device, config.training.amp)
    ddp = init_distributed(device)
    output_dir = checked_output_dir(config.output_dir or config.default_output_dir())

    meta = LeRobotDatasetMetadata(resolve_dataset_root(config.dataset.repo_id, config.dataset.root))
    policy_config = config.policy.with_dataset_features(meta.features)
    config = dataclasses.replace(config, policy=policy_config, output_dir=str(output_dir))
    saved_path = output_dir / TRAIN_CONFIG
    checkpoint = prepare_output_dir(config, output_dir, saved_path)
    if ddp.world_size > 1:  # every process has checked the folder before rank 0 writes into it
        dist.barrier()

    seed_everything(config.seed)
    train_episodes, val_episodes = config.dataset.split([e.episode_index for e in meta.episodes])
    windows = {
        "root": meta.root,
        "delta_timestamps": policy_config.delta_timestamps(meta.fps),
        "cameras": policy_config.image_keys,
    }  # a policy without cameras never decodes the dataset's video
    dataset = LeRobotDataset(episodes=train_episodes, **windows)
    positions = dataset.frame_positions(drop_last=policy_config.frames_dropped_at_episode_end)
    if len(positions) == 0:
        raise ConfigError(
            f"every episode is shorter than the {policy_config.frames_dropped_at_episode_end} frames dropped at "
            "its end (--policy.drop_n_last_frames): nothing to train on"
        )
    hyper = resolve_hyperparameters(config, policy_config, len(positions), ddp.world_size)
    policy = PreTrainedPolicy.policy_class(policy_config)(policy_config, dataset_stats=dataset.stats).to(
        device
    )
    if checkpoint is None and config.init_from:
        initial_weights = weights_to_start_from(config.init_from, policy, ddp.is_main)
    if checkpoint is None and initial_weights is not None:
        policy.load_state_dict(initial_weights)
    model = policy if objective is None else objective(policy)
    state = make_training_state(policy, hyper, device, getattr(model, "head", None))
    state.scaler = scaler  # before loading a checkpoint: a resumed float16 run gets its loss scale back
    start_step = 0 if checkpoint is None else load_checkpoint(checkpoint, policy, state)
    if config.training.cache_features:  # training time, like the steps it saves
        state.train_seconds += serve_feature_maps(policy, dataset, show_progress=ddp.is_main)
    if start_step >= hyper.steps and ddp.is_main:
        print(
            f"the run in {output_dir} already finished its {hyper.steps} steps; nothing to do "
            f"(a larger --training.steps trains it further)",
            file=sys.stderr,
        )
    if ddp.world_size > 1:  # each process draws its own noise (dropout, diffusion) after a common start
        torch.manual_seed(config.seed + 1_000_003 * ddp.rank + start_step)
    if ddp.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps({**_config_dict(config), "resume": False}, indent=2) + "\n")
        split = {"dataset": str(meta.root), "train_episodes": train_episodes, "val_episodes": val_episodes}
        write_json(output_dir / SPLIT_FILE, split)
        (output_dir / "hyperparameters.json").write_text(
            json.dumps(dataclasses.asdict(hyper), indent=2) + "\n"
        )

    if ddp.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    num_workers = config.training.num_workers
    if num_workers is None:
        num_workers = 4 if device.type == "cuda" else 0
    sampler = StepBatchSampler(
        positions, config.training.batch_size, config.seed, start_step, ddp.rank, ddp.world_size
    )
    loader = make_dataloader(dataset, sampler, num_workers, pin_memory=device.type == "cuda")
    validation = None
    if val_episodes and ddp.is_main:
        val_dataset = LeRobotDataset(episodes=val_episodes, **windows)
        validation = Validation(
            policy, val_dataset, config.training.batch_size, config.training.val_batches, device
        )
    loop = TrainingLoop(config, hyper, policy, model, state, device, autocast, output_dir, ddp, evaluate)
    loop.validation = validation
    try:
        loop.run(loader, start_step, sampler.per_epoch)
    finally:
        if ddp.world_size > 1:
            dist.destroy_process_group()
    return output_dir


def expected_duration(steps: int, seconds: float, remaining: int) -> str:
    """One line on how long the rest of a run takes at the rate `steps` steps in `seconds` showed."""
    left = remaining * seconds / steps
    done = datetime.datetime.now() + datetime.timedelta(seconds=left)
    length = (
        f"{left:.0f} s" if left < 60 else f"{left / 60:.0f} min" if left < 7200 else f"{left / 3600:.1f} h"
    )
    day = "" if left < 12 * 3600 else f" on {done:%b %d}"
    return (
        f"{steps / seconds:.2f} steps/s over {steps} steps: the remaining {remaining} steps take about {length} "
        f"(done around {done:%H:%M}{day})"
    )


class TrainingLoop:
    """Steps, logging, checkpoints and evaluations of one run."""

    def __init__(self, config, hyper, policy, model, state, device, autocast, output_dir, ddp, evaluate):
        self.config, self.hyper, self.policy, self.model, self.state = config, hyper, policy, model, state
        self.device, self.autocast = device, autocast
        self.output_dir, self.ddp, self.evaluate = output_dir, ddp, evaluate
        self.validation: Validation | None = None  # on rank 0, when episodes are held out
        self.best_val = math.inf

    def run(self, loader, start_step: int, per_epoch: int) -> None:
        t, total = self.config.training, self.hyper.steps
        log = MetricsLog(self.output_dir, start_step, t.log) if self.ddp.is_main else None
        if log is not None:  # a resumed run keeps the best validation score of its earlier steps
            self.best_val = min(
                (r["val"]["action_l1"] for r in log.records() if "val" in r), default=math.inf
            )
        val_freq = t.val_freq or t.save_freq
        progress = tqdm(
            total=total,
            initial=start_step,
            desc="training",
            unit="step",
            disable=not self.ddp.is_main,
            dynamic_ncols=True,
        )
        means, step, started = RunningMeans(), start_step, time.monotonic()
        first_step_done = started
        deadline = None if t.max_minutes is None else started + 60 * t.max_minutes
        seconds_before = self.state.train_seconds
        try:
            fetch_started = time.perf_counter()
            for batch in loader:
                if step >= total:
                    break
                data_seconds = time.perf_counter() - fetch_started
                metrics = {**self.train_step(batch, step), "data_s": data_seconds}
                step += 1
                self.state.train_seconds = seconds_before + time.monotonic() - started
                means.add(metrics, samples=t.batch_size * self.ddp.world_size)
                if step % t.log_freq == 0 or step == total:
                    summary = means.pop()
                    summary.update(
                        step=step,
                        epoch=round(step / per_epoch, 3),
                        lr=self.state.scheduler.get_last_lr()[0],
                        train_seconds=round(self.state.train_seconds, 1),
                        peak_memory_mb=process_peak_mb(self.device),
                    )
                    if log is not None:
                        log.write(summary)
                    progress.set_postfix_str(
                        f"loss {summary['loss']:.4g} lr {summary['lr']:.2g} {summary['samples_per_s']:.0f} samples/s",
                        refresh=False,
                    )
                progress.update()
                if step - start_step == 1:
                    first_step_done = time.monotonic()  # the first step warms caches up: time the ones after
                elif step - start_step == 1 + TIMED_STEPS and step < total and self.ddp.is_main:
                    duration = expected_duration(
                        TIMED_STEPS, time.monotonic() - first_step_done, total - step
                    )
                    progress.write(duration, file=sys.stderr)
                out_of_time = deadline is not None and self.agree(time.monotonic() > deadline)
                if step % t.save_freq == 0 or step == total or out_of_time:
                    self.save(step)
                if t.eval_freq and self.evaluate and step % t.eval_freq == 0:
                    self.run_evaluation(step, log, progress)
                if self.config.dataset.holds_out and (step % val_freq == 0 or step == total):
                    self.run_validation(step, log, progress)
                fetch_started = time.perf_counter()
                if out_of_time:
                    progress.write(
                        f"--training.max_minutes={t.max_minutes} reached at step {step}/{total}; "
                        "continue with --resume=true"
                    )
                    break
        except KeyboardInterrupt:
            if step > start_step:  # interrupts are held during a step, so this state is consistent
                self.save(step, wait_for_others=False)  # the other processes may be stopping too
            raise
        finally:
            progress.close()
            if log is not None:
                log.close()

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        t = self.config.training
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch = scale_camera_frames(batch, self.policy.config.image_keys)
        self.policy.train()
        with self.autocast:
            output = self.model(batch)
        loss = output["loss"]
        optimizer, scaler = self.state.optimizer, self.state.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip_norm or math.inf)
        loss_value, grad_norm_value = loss.item(), grad_norm.item()
        # with float16 loss scaling, infinite gradients are expected now and then (the scaler skips those steps)
        finite_gradients = scaler is not None or math.isfinite(grad_norm_value)
        if not (math.isfinite(loss_value) and finite_gradients):
            raise TrainingError(
                f"step {step + 1}: the loss is {loss_value} and the gradient norm {grad_norm_value}; training "
                f"stopped and the last good checkpoint in {self.output_dir / 'checkpoints'} is kept. Try a "
                "lower --training.lr, or check the dataset's statistics for constant or extreme features."
            )
        with deferred_interrupts():
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.state.scheduler.step()
            if self.state.ema is not None:
                self.state.ema.step(self.policy.parameters())
        metrics = {
            k: float(v) for k, v in output.items() if k != "loss" and torch.is_tensor(v) and v.numel() == 1
        }
        return {"loss": loss_value, **metrics, "grad_norm": grad_norm_value}

    def agree(self, flag: bool) -> bool:
        """Rank 0's value of `flag` on every process (so all stop at the same step)."""
        if self.ddp.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def save(self, step: int, wait_for_others: bool = True) -> None:
        if not all(torch.isfinite(p).all() for p in self.policy.parameters()):
            raise TrainingError(
                f"step {step}: the weights are no longer finite; training stopped and the last good checkpoint "
                f"in {self.output_dir / 'checkpoints'} is kept. Try a lower --training.lr."
            )
        if self.ddp.is_main:
            with deferred_interrupts():
                save_checkpoint(self.output_dir, step, self.policy, self.state)
        if self.ddp.world_size > 1 and wait_for_others:
            dist.barrier()

    @contextlib.contextmanager
    def averaged_weights(self):
        """The EMA weights in the policy for the block, when EMA is on (what checkpoints hold)."""
        ema = self.state.ema
        if ema is not None:
            ema.store(self.policy.parameters())
            ema.copy_to(self.policy.parameters())
        try:
            yield
        finally:
            if ema is not None:
                ema.restore(self.policy.parameters())

    def run_validation(self, step: int, log: MetricsLog | None, progress) -> None:
        """Validate on the held-out episodes (rank 0); a new best is saved and linked as checkpoints/best."""
        improved = False
        if self.validation is not None:
            with self.averaged_weights():
                results = self.validation()
            log.write({"step": step, "val": results})
            improved = results["action_l1"] < self.best_val
            self.best_val = min(self.best_val, results["action_l1"])
            marker = " (best so far)" if improved else ""
            progress.write(
                f"step {step}: validation loss {results['loss']:.4g}, action L1 {results['action_l1']:.4g}{marker}",
                file=sys.stderr,
            )
        if self.agree(improved):
            if not checkpoint_dir(self.output_dir, step).exists():
                self.save(step)
            if self.ddp.is_main:
                point_link(self.output_dir, BEST_CHECKPOINT, step)

    def run_evaluation(self, step: int, log: MetricsLog | None, progress) -> None:
        if not self.ddp.is_main:
            return
        with self.averaged_weights():
            results = self.evaluate(self.policy)
        if log is not None:
            log.write({"step": step, "eval": results})
        shown = {k: round(v, 3) for k, v in results.items() if isinstance(v, float)}
        progress.write(f"step {step}: eval {json.dumps(shown)}")
