"""`policylab bench`: inference speed of a trained policy, measured the way a robot would call it.

Inputs are real observations from the dataset the policy was trained on, one at a time (batch 1). After
`warmup` untimed calls, each of `n_calls` timed calls is bracketed by device synchronisation (on CUDA), so
a time is the call's full latency. Two figures per sampler setting:

    chunk call       one `predict_action_chunk`: the model's whole inference (for diffusion, every
                     denoising step), on windows at random dataset positions
    select_action    `select_action` over `control_steps` consecutive frames of one episode after
                     `reset()`: its mean is the cost per control step amortised over the action queue, its
                     p95 and max show the steps that run the model

Diffusion policies are measured at each `samplers` setting with the same weights (e.g. DDPM-100, DDIM-10).
Also reported: parameters, floating-point operations per chunk call (matmuls, convolutions and attention, as
counted by `torch.utils.flop_counter`), and peak memory: the weights and buffers plus the most the memory
in use rose during the chunk calls (on CPU the process's resident set, on CUDA the allocator's tensors; see
`PeakMemory`).

With `--sweep.steps`, every sampler setting is also evaluated in the simulator (`sweep.py`), giving the
speed/quality table and `speed_quality.png`.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from policylab.constants import HELD_OUT_SEED
from policylab.datasets import DatasetConfig, LeRobotDataset, LeRobotDatasetMetadata
from policylab.evaluation.sweep import (
    SPEED_QUALITY,
    SweepSettings,
    evaluate_settings,
    plot_speed_quality,
    sweep_specs,
)
from policylab.policies import PreTrainedConfig, PreTrainedPolicy
from policylab.runs import Checkpoint, PolicyPathConfig, checked_output_dir, default_output_dir
from policylab.utils.device import select_device
from policylab.utils.files import write_json
from policylab.utils.memory import PeakMemory

SAMPLER_TYPES = ("DDPM", "DDIM", "LCM")


@dataclass
class BenchSettings:
    """What to time.

    n_calls: timed chunk calls per sampler setting (after the warm-up).
    warmup: untimed calls first (allocations, kernel selection, caches).
    control_steps: consecutive select_action calls timed per sampler setting.
    samplers: for diffusion policies, the sampler settings to compare on the same weights, each
        TYPE-STEPS with TYPE DDPM, DDIM or LCM (a consistency student), e.g. [DDPM-100,DDIM-10]; default
        the full DDPM chain and DDIM-10 ([DDPM-100,DDIM-10] with 100 training steps), or [LCM-1,LCM-3] for a
        student of `policylab distill`.
    compile: compile the networks each call runs with torch.compile first (`compile_for_inference`); the
        first call, which compiles, is timed apart as compile_s.
    """

    n_calls: int = 20
    warmup: int = 3
    control_steps: int = 100
    samplers: list[str] | None = None
    compile: bool = False

    def __post_init__(self):
        for name in ("n_calls", "control_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--bench.{name} must be at least 1, got {getattr(self, name)}")
        for spec in self.samplers or []:
            parse_sampler(spec)


@dataclass
class BenchConfig:
    """policylab bench: inference latency of a trained policy at batch 1 (writes bench_info.json).

    Observations come from --dataset (default: the dataset the policy was trained on).
    output_dir: where bench_info.json goes (default outputs/bench/<time>_<policy type>).
    seed: picks the dataset positions and seeds sampling.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    policy: PolicyPathConfig = field(default_factory=PolicyPathConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    bench: BenchSettings = field(default_factory=BenchSettings)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    output_dir: str | None = None
    seed: int = 0
    device: str | None = None


def parse_sampler(spec: str) -> dict:
    """'DDIM-10' -> {"noise_scheduler_type": "DDIM", "num_inference_steps": 10}."""
    kind, _, steps = spec.partition("-")
    if kind.upper() not in SAMPLER_TYPES or not steps.isdigit() or int(steps) < 1:
        raise ValueError(
            f"--bench.samplers: '{spec}' is not TYPE-STEPS with TYPE one of {', '.join(SAMPLER_TYPES)} and STEPS a "
            "positive integer, e.g. DDIM-10"
        )
    return {"noise_scheduler_type": kind.upper(), "num_inference_steps": int(steps)}


def sampler_settings(config: PreTrainedConfig, samplers: list[str] | None) -> dict[str, dict]:
    """Name -> the config changes of each setting to time; one setting, as saved, for other policies."""
    if not hasattr(config, "noise_scheduler_type"):
        return {"as trained": {}}
    return {spec: parse_sampler(spec) for spec in samplers or default_samplers(config)}


def default_samplers(config) -> list[str]:
    """A diffusion policy's full DDPM chain and DDIM-10; a consistency student's 1 and 3 steps."""
    if config.noise_scheduler_type == "LCM":
        return ["LCM-1", f"LCM-{min(3, config.original_inference_steps)}"]
    return [f"DDPM-{config.num_train_timesteps}", f"DDIM-{min(10, config.num_train_timesteps)}"]


def latency_stats(milliseconds: list[float]) -> dict[str, float]:
    ms = np.asarray(milliseconds, dtype=np.float64)
    return {
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "max": float(ms.max()),
        "n": int(ms.size),
    }


def time_calls(call, inputs: list, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds of `call(x)` for each x of `inputs`, after `warmup` untimed calls on the first ones."""
    for x in inputs[:warmup]:
        call(x)
    times = []
    for x in inputs:
        _synchronize(device)
        tic = time.perf_counter()
        call(x)
        _synchronize(device)
        times.append(1000.0 * (time.perf_counter() - tic))
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def observation_inputs(
    policy: PreTrainedPolicy, dataset: LeRobotDataset, positions: np.ndarray
) -> list[dict]:
    """Batch-1 policy inputs (with the policy's observation window) at dataset `positions`."""
    keys = list(policy.config.input_shapes)
    return [{k: v[None] for k, v in dataset[int(i)].items() if k in keys} for i in positions]


def benchmark_policy(
    checkpoint: Checkpoint, changes: dict, dataset_root: Path, settings: BenchSettings, device, seed: int
) -> dict:
    """Every figure of the module docstring for the policy of `checkpoint` (with `changes` to its config)."""
    reference = checkpoint.load(device, **changes)
    config = reference.config
    windows = LeRobotDataset(
        root=dataset_root,
        delta_timestamps=_observation_windows(config, dataset_root),
        cameras=config.image_keys,
    )
    rng = np.random.default_rng(seed)
    chunk_inputs = observation_inputs(
        reference, windows, rng.choice(len(windows), settings.warmup + settings.n_calls)
    )
    episode = LeRobotDataset(
        root=dataset_root, episodes=[windows.meta.episodes[0].episode_index], cameras=config.image_keys
    )
    steps = np.arange(settings.control_steps) % len(episode)  # consecutive frames, repeated if short
    control_inputs = observation_inputs(reference, episode, steps)

    weights_mb = sum(t.numel() * t.element_size() for t in reference.state_dict().values()) / 2**20
    results = {
        "policy_type": config.type,
        "parameters": sum(p.numel() for p in reference.parameters()),
        "weights_mb": weights_mb,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "variants": {},
    }
    for name, sampler in sampler_settings(config, settings.samplers).items():
        policy = checkpoint.load(device, **{**changes, **sampler}).requires_grad_(False)
        torch.manual_seed(seed)
        with torch.inference_mode():
            with FlopCounterMode(display=False) as flops:
                policy.predict_action_chunk(chunk_inputs[0])
            compile_seconds = compile_first(policy, chunk_inputs[0], device) if settings.compile else None
            with PeakMemory(device) as memory:
                chunk_ms = time_calls(policy.predict_action_chunk, chunk_inputs, settings.warmup, device)
            policy.reset()
            step_ms = time_calls(policy.select_action, control_inputs, 0, device)
        results["variants"][name] = {
            "chunk_call_ms": latency_stats(chunk_ms[settings.warmup :]),
            "select_action_ms": latency_stats(step_ms),
            "gflops_per_chunk_call": flops.get_total_flops() / 1e9,
            "peak_memory_mb": None if memory.megabytes is None else weights_mb + memory.megabytes,
            "peak_memory_kind": memory.kind,
            "compile_s": compile_seconds,
        }
    return results


def compile_first(policy: PreTrainedPolicy, observation: dict, device: torch.device) -> float:
    """Compiles the policy's inference networks; returns the seconds of the first call, which compiles them."""
    policy.compile_for_inference()
    return time_calls(policy.predict_action_chunk, [observation], 0, device)[0] / 1000


def _observation_windows(config, dataset_root: Path) -> dict[str, list[float]] | None:
    windows = config.delta_timestamps(LeRobotDatasetMetadata(dataset_root).fps)
    return {k: v for k, v in windows.items() if k in config.input_shapes} or None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def run_bench(config: BenchConfig, overrides: list[str]) -> Path:
    """`policylab bench`: measure, print a table, write bench_info.json; returns its path."""
    device = select_device(config.device)
    checkpoint = Checkpoint.resolve(config.policy.path)
    changes = checkpoint.changes(overrides)
    root = checkpoint.dataset_root(config.dataset, "bench")
    output_dir = checked_output_dir(config.output_dir or default_output_dir("bench", checkpoint.config.type))
    settings = config.bench
    if config.sweep.steps:
        swept = dataclasses.replace(checkpoint.config, **changes)
        settings = dataclasses.replace(settings, samplers=sweep_specs(swept, config.sweep))
    results = benchmark_policy(checkpoint, changes, root, settings, device, config.seed)
    results["policy_path"] = checkpoint.path
    results["dataset_root"] = str(root)
    print(format_bench(results))
    if config.sweep.steps:
        specs = sampler_settings(checkpoint.config, settings.samplers)
        quality = evaluate_settings(checkpoint, changes, specs, config.sweep, device)
        results["sweep"] = {
            name: {**quality[name], "chunk_call_ms_p50": results["variants"][name]["chunk_call_ms"]["p50"]}
            for name in specs
        }
        results["sweep_settings"] = {"n_episodes": config.sweep.n_episodes, "seed": HELD_OUT_SEED}
        figure = plot_speed_quality(results["sweep"], output_dir / SPEED_QUALITY)
        print(format_sweep(results["sweep"], config.sweep.n_episodes))
        print(f"{SPEED_QUALITY} written to {figure.resolve()}")
    path = write_json(output_dir / "bench_info.json", results)
    print(f"bench_info.json written to {path.resolve()}")
    return path


def format_sweep(rows: dict[str, dict], n_episodes: int) -> str:
    """One row per sampler setting: latency, success with its interval, max coverage."""
    columns = ("setting", "chunk call ms p50", f"success ({n_episodes} episodes, 95% CI)", "max coverage")
    table = [
        (name, f"{r['chunk_call_ms_p50']:.2f}",
         f"{r['success_rate']:.0%} ({r['success_rate_ci95'][0]:.0%}-{r['success_rate_ci95'][1]:.0%})",
         f"{r['avg_max_reward']:.3f}")
        for name, r in rows.items()
    ]  # fmt: skip
    return format_table(columns, table)


def format_bench(results: dict) -> str:
    """One row per sampler setting: chunk-call and per-step latencies, GFLOPs, peak memory."""
    header = (
        f"{results['policy_type']} policy, {results['parameters'] / 1e6:.2f} M parameters, batch 1 on "
        f"{results['device_name']}"
    )
    compiled = [r["compile_s"] for r in results["variants"].values() if r.get("compile_s") is not None]
    if compiled:
        header += f"; compiled (first call {max(compiled):.1f} s, not in the figures)"
    columns = (
        "setting",
        "chunk call ms (mean / p50 / p95)",
        "select_action ms (mean / p95 / max)",
        "GFLOPs",
        "peak MB",
    )
    rows = []
    for name, r in results["variants"].items():
        chunk, step = r["chunk_call_ms"], r["select_action_ms"]
        memory = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        rows.append((
            name,
            f"{chunk['mean']:.2f} / {chunk['p50']:.2f} / {chunk['p95']:.2f}",
            f"{step['mean']:.2f} / {step['p95']:.2f} / {step['max']:.2f}",
            f"{r['gflops_per_chunk_call']:.3f}",
            memory,
        ))  # fmt: skip
    return "\n".join([header, format_table(columns, rows)])


def format_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows, strict=True)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join("  " + line for line in lines)
