"""`policylab compare`: the same evaluation and benchmark for several trained policies, as one report.

For each policy (a training run, or a checkpoint), in `output_dir/<name>/`:
    eval_info.json           rollouts from the same seeds (`policylab eval`'s file), with n_videos videos
    bench_info.json          batch-1 latency (`policylab bench`'s file; diffusion at each sampler setting)
    policy_comparison.png    predicted vs demonstrated actions; training_curves.png from the run's metrics
A file already there from the same checkpoint and settings is reused, so an interrupted comparison resumes.
Then `report.md` (images linked) and `report.html` (self-contained: images and the first video of each
policy embedded) hold the table, which is also printed.
"""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field
from pathlib import Path

from policylab.constants import HELD_OUT_SEED, METRICS_FILE
from policylab.datasets import DatasetConfig
from policylab.envs import EnvConfig, PushTEnvConfig
from policylab.errors import ConfigError
from policylab.evaluation.benchmark import BenchSettings, benchmark_policy, format_table
from policylab.evaluation.configs import EvalConfig, EvalSettings
from policylab.evaluation.evaluate import (
    EVAL_INFO,
    eval_settings,
    evaluate_checkpoint,
    evaluate_checkpoint_offline,
    offline_settings,
)
from policylab.report.plots import (
    open_with_policy_windows,
    plot_training_curves,
    plot_trajectories,
    visualize_action_predictions,
)
from policylab.runs import Checkpoint, checked_output_dir, default_output_dir
from policylab.utils.device import select_device
from policylab.utils.files import saved_with, write_json

BENCH_INFO = "bench_info.json"
STUDY_LINE = (
    "Every cell of the tutorial's ACT-vs-Diffusion table (both policies on consistent and on diverse "
    "demonstrations with one budget, learning curves, multi-modality, memory, ease of tuning) is measured by "
    "`policylab study --config_path=configs/study/pusht_cpu.json` (docs/study.md)."
)


@dataclass
class CompareConfig:
    """policylab compare: evaluate and benchmark several trained policies on the same seeds; writes report.md
    and report.html.

    policies: training run folders or checkpoints, e.g. --policies outputs/act_pusht outputs/diffusion_pusht
    output_dir: where the report and each policy's files go (default outputs/compare/<time>).
    seed: episode i of every policy starts from seed + i.
    device: cuda, mps or cpu (default: the first available, in that order).
    """

    policies: list[str] = field(default_factory=list)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    env: EnvConfig = field(default_factory=PushTEnvConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    output_dir: str | None = None
    seed: int = HELD_OUT_SEED
    device: str | None = None


def policy_names(checkpoints: list[Checkpoint]) -> list[str]:
    """A short unique name per policy: its training run's folder name (or the path's last part)."""
    names = []
    for checkpoint in checkpoints:
        base = checkpoint.name
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run_compare(config: CompareConfig, offline: bool = False) -> Path:
    """Measure every policy (reusing what is already measured), write and print the report; returns report.md."""
    if len(config.policies) < 1:
        raise ConfigError(
            "--policies: give one or more training runs or checkpoints, e.g. --policies OUT_A OUT_B"
        )
    device = select_device(config.device)
    # every path is resolved, and the output folder made, before the first long evaluation starts
    checkpoints = [Checkpoint.resolve(path, "--policies") for path in config.policies]
    output_dir = checked_output_dir(config.output_dir or default_output_dir("compare", "report"))
    rows = []
    for name, checkpoint in zip(policy_names(checkpoints), checkpoints, strict=True):
        print(f"== {name} ({checkpoint.path})")
        rows.append(measure_policy(name, checkpoint, output_dir / name, config, device, offline))
    report = write_report(rows, config, output_dir, str(device))
    print(format_comparison(rows))
    print(f"report written to {report.resolve()} and {report.with_suffix('.html').resolve()}")
    return report


def measure_policy(
    name: str, checkpoint: Checkpoint, folder: Path, config: CompareConfig, device, offline: bool
) -> dict:
    """Evaluation (in the simulator, or offline on held-out episodes), benchmark, plots and training facts of one
    policy (files in `folder`)."""
    policy = checkpoint.load(device)
    as_eval = EvalConfig(dataset=config.dataset, env=config.env, eval=config.eval, seed=config.seed)
    settings = offline_settings if offline else eval_settings
    eval_info = saved_with(folder / EVAL_INFO, settings(checkpoint, {}, as_eval, device))
    if eval_info is None:
        evaluate = evaluate_checkpoint_offline if offline else evaluate_checkpoint
        eval_info = evaluate(policy, checkpoint, {}, as_eval, device, folder)
    dataset_root = checkpoint.dataset_root(config.dataset, "compare")
    bench_settings = {
        "checkpoint": str(checkpoint.folder.resolve()),
        "dataset": str(dataset_root),
        "device": str(device),
        **asdict(config.bench),
    }
    bench_info = saved_with(folder / BENCH_INFO, bench_settings)
    if bench_info is None:
        bench_info = benchmark_policy(checkpoint, {}, dataset_root, config.bench, device, config.seed)
        bench_info["settings"] = bench_settings
        write_json(folder / BENCH_INFO, bench_info)
    plots = {"policy_comparison": folder / "policy_comparison.png"}
    if not plots["policy_comparison"].is_file():
        dataset = open_with_policy_windows(policy, dataset_root)
        visualize_action_predictions(policy, dataset, path=plots["policy_comparison"])
    if offline:
        plots["trajectories"] = folder / "trajectories.png"
        if not plots["trajectories"].is_file():
            plot_trajectories(
                policy, dataset_root, eval_info["episodes"]["indices"][:2], plots["trajectories"]
            )
    if checkpoint.run is not None and (checkpoint.run / METRICS_FILE).is_file():
        plots["training_curves"] = plot_training_curves(checkpoint.run, folder / "training_curves.png")
    return {
        "name": name,
        "path": checkpoint.path,
        "type": checkpoint.config.type,
        "eval": eval_info,
        "bench": bench_info,
        "training": checkpoint.training_facts(),
        "inputs": list(checkpoint.config.input_shapes),
        "plots": plots,
    }


COLUMNS = (
    "policy", "success (95% CI)", "avg steps", "avg reward", "max coverage", "path efficiency",
    "eval ms/step", "chunk call ms (batch 1)", "training", "steps", "params", "peak MB",
)  # fmt: skip


OFFLINE_COLUMNS = (
    "policy", "action L1 (chunks)", "action MSE", "replayed L1", "gripper agreement", "jerk policy / demos",
    "eval ms/step", "chunk call ms (batch 1)", "training", "steps", "params", "peak MB",
)  # fmt: skip


def columns(rows: list[dict]) -> tuple[str, ...]:
    return OFFLINE_COLUMNS if rows and rows[0]["eval"].get("mode") == "offline" else COLUMNS


def common_cells(row: dict) -> tuple[str, ...]:
    """The table's last columns, the same offline and in simulation: latency, training, size, memory."""
    bench, training = row["bench"], row["training"]
    chunk = " / ".join(f"{name} {r['chunk_call_ms']['p50']:.1f}" for name, r in bench["variants"].items())
    memory = [r["peak_memory_mb"] for r in bench["variants"].values() if r["peak_memory_mb"] is not None]
    seconds, pretrain = training["train_seconds"], training.get("pretrain_seconds")
    minutes = "n/a" if seconds is None else f"{seconds / 60:.1f} min"
    return (
        chunk.replace("as trained ", ""),
        minutes if pretrain is None or seconds is None else f"{pretrain / 60:.1f} + {minutes}",
        "n/a" if training["steps"] is None else str(training["steps"]),
        f"{bench['parameters'] / 1e6:.2f} M",
        f"{max(memory):.0f}" if memory else "n/a",
    )


def offline_row(row: dict) -> tuple[str, ...]:
    a = row["eval"]["aggregated"]
    gripper = "n/a" if a["gripper_agreement"] is None else f"{100 * a['gripper_agreement']:.0f}%"
    return (
        f"{row['name']} ({row['type']})", f"{a['action_l1']:.4g}", f"{a['action_mse']:.4g}", f"{a['replay_l1']:.4g}",
        gripper, f"{a['jerk_predicted']:.3g} / {a['jerk_demonstrated']:.3g}", f"{a['inference_ms_per_step']:.1f}",
        *common_cells(row),
    )  # fmt: skip


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """One row of the comparison table per measured policy."""
    if columns(rows) is OFFLINE_COLUMNS:
        return [offline_row(row) for row in rows]
    out = []
    for row in rows:
        a = row["eval"]["aggregated"]
        low, high = a["success_rate_ci95"]
        out.append((
            f"{row['name']} ({row['type']})",
            f"{100 * a['success_rate']:.0f}% ({100 * low:.0f}-{100 * high:.0f})",
            f"{a['avg_steps']:.0f}",
            f"{a['avg_reward']:.1f}",
            f"{a['avg_max_reward']:.2f}",
            f"{a['path_efficiency']:.2f}",
            f"{a['inference_ms_per_step']:.1f}",
            *common_cells(row),
        ))  # fmt: skip
    return out


def format_comparison(rows: list[dict]) -> str:
    return format_table(columns(rows), table_rows(rows))


def _markdown_table(rows: list[dict]) -> str:
    header = columns(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(rows)]
    return "\n".join(lines)


def _notes(rows: list[dict], config: CompareConfig, device: str) -> list[str]:
    device_name = rows[0]["bench"]["device_name"]
    common = [
        "chunk call ms: median of one full model call at batch 1 (for diffusion, per sampler).",
        "training: wall time of the training loop and optimizer steps, from the checkpoint (a + b: a minutes of "
        "camera-trunk pretraining, then b of policy training). peak MB: weights plus the largest rise in memory "
        "during the batch-1 calls.",
        *pretraining_notes(rows),
    ]
    if columns(rows) is OFFLINE_COLUMNS:
        episodes = rows[0]["eval"]["episodes"]
        return [
            f"Offline, no simulator: each policy against the demonstrations of {len(episodes['indices'])} episodes "
            f"({episodes['source']}) of {episodes['dataset']}, in the dataset's units, on {device} ({device_name}).",
            "action L1 / MSE (chunks): the predicted chunk at each frame against the demonstrated actions that follow "
            "(past the episode end left out). replayed L1: the actions select_action executes when fed the "
            "episode's observations one frame at a time (open loop) against the demonstrated ones.",
            "gripper agreement: steps where executed and demonstrated gripper commands are on the same side of the "
            "gripper's mid range. jerk: mean |third difference| x fps^3 of the executed and demonstrated actions.",
            "eval ms/step: policy time per select_action call at batch 1 during the replay.",
            *common,
        ]
    n, seed = config.eval.n_episodes, config.seed
    return [
        f"Each policy: {n} episodes of {config.env.type} from seeds {seed}-{seed + n - 1} (the same for every "
        f"policy), {config.eval.batch_size} environments per batch, on {device} ({device_name}).",
        "success: the env reported success (PushT: goal coverage above 95%); 95% Wilson interval in brackets.",
        "avg reward: mean sum of per-step rewards; max coverage: mean of each episode's best reward (the Diffusion "
        "Policy paper's score); path efficiency: block displacement / block path length.",
        "eval ms/step: policy time per control step during the batched rollouts (all environments of a batch "
        "in one call).",
        *common,
        f"This compares the checkpoints given. {STUDY_LINE}",
    ]


def pretraining_notes(rows: list[dict]) -> list[str]:
    """One plain sentence per policy whose camera trunk learned from a recorded label before it trained."""
    return [
        f"{row['name']}: its camera encoder was pretrained to predict {row['training']['trunk_pretrained_on']} "
        "(recorded with the demonstrations) from the camera frames; the policy itself receives only its inputs "
        f"({', '.join(row['inputs'])}), in training and in evaluation."
        for row in rows
        if row["training"].get("trunk_pretrained_on")
    ]


def write_report(rows: list[dict], config: CompareConfig, output_dir: Path, device: str) -> Path:
    """report.md (plots linked, relative to it) and report.html (everything embedded); returns report.md."""
    notes = _notes(rows, config, device)
    md = ["# Policy comparison", "", _markdown_table(rows), "", *[f"- {note}" for note in notes], ""]
    for row in rows:
        md += [f"## {row['name']} ({row['type']})", "", f"Checkpoint: `{row['path']}`", ""]
        md += [f"![{kind}]({p.relative_to(output_dir)})" for kind, p in row["plots"].items()]
        md += [
            f"- video: [{Path(v).name}]({Path(v).relative_to(output_dir.resolve())})"
            for v in _videos(row, output_dir)
        ]
        md.append("")
    report = output_dir / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(md))
    report.with_suffix(".html").write_text(_html(rows, notes, output_dir))
    return report


def _videos(row: dict, output_dir: Path) -> list[str]:
    return [str(Path(v).resolve()) for v in row["eval"].get("video_paths", []) if Path(v).is_file()]


def _html(rows: list[dict], notes: list[str], output_dir: Path) -> str:
    def cell(tag: str, text: str) -> str:
        return f"<{tag}>{html.escape(text)}</{tag}>"

    table = "<tr>" + "".join(cell("th", c) for c in columns(rows)) + "</tr>"
    table += "".join("<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in table_rows(rows))
    body = [f"<h1>Policy comparison</h1><table>{table}</table><ul>"]
    body += [cell("li", note) for note in notes] + ["</ul>"]
    for row in rows:
        body.append(
            f"<h2>{html.escape(row['name'])} ({row['type']})</h2><p><code>{html.escape(row['path'])}</code></p>"
        )
        for kind, path in row["plots"].items():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            body.append(f'<img alt="{kind}" src="data:image/png;base64,{data}">')
        videos = _videos(row, output_dir)
        if videos:
            data = base64.b64encode(Path(videos[0]).read_bytes()).decode()
            body.append(
                f'<p><video controls loop width="384" src="data:video/mp4;base64,{data}"></video></p>'
            )
    style = (
        "body{font-family:sans-serif;max-width:1700px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%;display:block}"
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Policy comparison</title><style>{style}</style>'
        f"</head><body>{''.join(body)}</body></html>\n"
    )
