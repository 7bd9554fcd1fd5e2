"""Speed against quality of one diffusion policy's weights: `policylab bench --sweep.steps=1,2,3,5,10`.

Every sampler setting (type x steps) is timed at batch 1 as `bench` times it and evaluated in the simulator
on the same held-out seeds; `speed_quality.png` plots success rate and mean max coverage against the
chunk-call latency, one line per sampler type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from policylab.constants import HELD_OUT_SEED  # noqa: E402
from policylab.errors import ConfigError  # noqa: E402
from policylab.evaluation.rollout import evaluate_policy  # noqa: E402
from policylab.runs import Checkpoint  # noqa: E402

SPEED_QUALITY = "speed_quality.png"


@dataclass
class SweepSettings:
    """A speed/quality sweep (off unless steps are given).

    steps: sampling steps to try, e.g. [1,2,3,5,10,20,50,100]; settings a sampler cannot take (more steps
        than the noise schedule has, more consistency steps than the student was distilled for) are skipped.
    samplers: sampler types to sweep (default DDPM and DDIM; LCM for a consistency student).
    n_episodes: episodes per setting, from the same held-out seeds for every setting.
    batch_size: environments stepped together during the evaluations.
    """

    steps: list[int] | None = None
    samplers: list[str] | None = None
    n_episodes: int = 50
    batch_size: int = 10

    def __post_init__(self):
        for name in ("n_episodes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--sweep.{name} must be at least 1, got {getattr(self, name)}")


def sweep_specs(config, sweep: SweepSettings) -> list[str]:
    """The TYPE-STEPS settings of the sweep that this policy can sample with."""
    if not hasattr(config, "noise_scheduler_type"):
        raise ConfigError(f"--sweep.steps: a {config.type} policy has no sampler to sweep (diffusion only)")
    student = config.noise_scheduler_type == "LCM"
    types = (
        [t.upper() for t in sweep.samplers] if sweep.samplers else (["LCM"] if student else ["DDPM", "DDIM"])
    )
    limit = {"DDPM": config.num_train_timesteps, "DDIM": config.num_train_timesteps}
    limit["LCM"] = config.original_inference_steps
    unknown = sorted(set(types) - set(limit))
    if unknown:
        raise ConfigError(f"--sweep.samplers: unknown {unknown}; expected DDPM, DDIM or LCM")
    specs = [f"{kind}-{n}" for kind in types for n in sweep.steps if 1 <= n <= limit[kind]]
    if not specs:
        raise ConfigError(f"--sweep.steps={sweep.steps}: no setting fits {types} (at most {limit})")
    return specs


def evaluate_settings(checkpoint: Checkpoint, changes: dict, specs: dict[str, dict], sweep, device) -> dict:
    """Success and max coverage of each sampler setting (name -> config changes) over the same held-out seeds."""
    results = {}
    for name, sampler in specs.items():
        policy = checkpoint.load(device, **{**changes, **sampler})
        metrics = evaluate_policy(
            policy, "pusht", n_episodes=sweep.n_episodes, seed=HELD_OUT_SEED, batch_size=sweep.batch_size,
            progress=False,
        )  # fmt: skip
        results[name] = {k: metrics[k] for k in ("success_rate", "success_rate_ci95", "avg_max_reward")}
    return results


def plot_speed_quality(rows: dict[str, dict], path: Path) -> Path:
    """Success rate and max coverage against chunk-call latency, a line per sampler type, points labelled."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    by_type: dict[str, list[tuple[int, dict]]] = {}
    for name, row in rows.items():
        kind, steps = name.split("-")
        by_type.setdefault(kind, []).append((int(steps), row))
    for kind, points in by_type.items():
        points.sort()
        latency = [row["chunk_call_ms_p50"] for _, row in points]
        for ax, key in zip(axes, ("success_rate", "avg_max_reward"), strict=True):
            ax.plot(latency, [row[key] for _, row in points], marker="o", label=kind)
            for steps, row in points:
                ax.annotate(str(steps), (row["chunk_call_ms_p50"], row[key]), textcoords="offset points",
                            xytext=(3, 3), fontsize=8)  # fmt: skip
    for ax, title in zip(axes, ("success rate", "mean max coverage"), strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("chunk call latency, p50 (ms, log scale)")
        ax.set_title(f"{title} (labels: steps)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
