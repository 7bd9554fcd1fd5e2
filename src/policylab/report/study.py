"""The study's report: the tutorial's ACT-vs-Diffusion table with every cell measured (study.md, study.html,
study.json), the learning curves and the multi-modality picture."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from policylab.evaluation.metrics import wilson_interval
from policylab.utils.files import write_json

NAMES = {"act": "ACT", "diffusion": "Diffusion"}
ROWS = ("Inference speed", "Training", "Success rate (consistent demonstrations)",
        "Success rate (diverse demonstrations)", "Multi-modal support", "Memory", "Ease of tuning", "Best for")  # fmt: skip
DEFINITIONS = [
    "Success: the episode reached goal coverage >= 95 % within the step limit (PushT's own success), over the held-out "
    "episodes of every run of the cell pooled; 95 % Wilson interval in brackets. Coverage: mean of each episode's "
    "best coverage (the Diffusion Policy paper's score). Steps: mean control steps. Reward: mean sum of per-step "
    "rewards. Path efficiency: block displacement / block path length.",
    "Inference speed: median of batch-1 `predict_action_chunk` calls (one model call; for Diffusion every denoising "
    "step) and mean of `select_action` over consecutive control steps (model calls amortised over the actions "
    "executed per call), on the machine named above.",
    "Training: minutes of the training loop (and epochs) at the first kept checkpoint whose success reached 50 % and "
    "90 % of the run's final success; every run had the same budget.",
    "Multi-modal support: at start states where the diverse expert's demonstrations split between distinct pushes, "
    "the chunks the policy predicts from the start observation are clustered like the demonstrations' (same radius); "
    "modes covered: demonstrated modes with a predicted chunk nearby; off: predicted chunks near no demonstrated "
    "mode (an average of two pushes is one); committed: rollouts whose executed actions follow a demonstrated mode.",
    "Memory: parameters; weights file size; peak memory of the training process (resident set on a CPU, allocated "
    "tensors on a GPU); inference: weights plus the peak rise during batch-1 calls.",
    "Ease of tuning: a small Optuna study per policy (same steps per trial, same held-out episodes): best minus median "
    "trial score (a large gap: settings matter), and the hyperparameter with the highest fANOVA importance.",
    "Best for: the rows above where the policy measured ahead of the other, nothing else.",
]


# -- cells --------------------------------------------------------------------------------------------------


def runs_of(m: dict, policy: str, kind: str) -> list[str]:
    return [
        name for name, run in m["runs"].items() if run["policy"] == policy and run["demonstrations"] == kind
    ]


def final_success(m: dict, policy: str, kind: str) -> dict | None:
    """Final-checkpoint metrics of a cell, pooled over its seeds (None when the cell was not run)."""
    finals = [m["curves"][name][-1] for name in runs_of(m, policy, kind) if m["curves"].get(name)]
    if not finals:
        return None
    episodes = sum(f["n_episodes"] for f in finals)
    successes = round(sum(f["success_rate"] * f["n_episodes"] for f in finals))
    pooled = {
        k: float(np.mean([f[k] for f in finals]))
        for k in ("avg_max_reward", "avg_steps", "avg_reward", "path_efficiency")
    }
    return {"success_rate": successes / episodes, "ci": wilson_interval(successes, episodes), "episodes": episodes,
            "seeds": [f["success_rate"] for f in finals], **pooled}  # fmt: skip


def success_cell(m: dict, policy: str, kind: str) -> str:
    s = final_success(m, policy, kind)
    if s is None:
        return "not run"
    low, high = s["ci"]
    seeds = f"; per seed {', '.join(f'{100 * v:.0f} %' for v in s['seeds'])}" if len(s["seeds"]) > 1 else ""
    return (f"{100 * s['success_rate']:.0f} % ({100 * low:.0f}-{100 * high:.0f}), coverage {s['avg_max_reward']:.2f}, "
            f"{s['avg_steps']:.0f} steps, reward {s['avg_reward']:.1f}, path efficiency {s['path_efficiency']:.2f} "
            f"({s['episodes']} episodes{seeds})")  # fmt: skip


def reach(points: list[dict], fraction: float) -> str:
    final = points[-1]["success_rate"]
    hit = next(p for p in points if p["success_rate"] >= fraction * final)
    return f"{hit['minutes']:.1f} min ({hit['epoch']:.1f} epochs)"


def training_cell(m: dict, policy: str) -> str:
    parts = []
    for kind in ("consistent", "diverse"):
        for name in runs_of(m, policy, kind)[:1]:
            points, run = m["curves"][name], m["runs"][name]
            if points[-1]["success_rate"] == 0:
                parts.append(
                    f"{kind}: no success in {run['train_minutes']:.1f} min ({run['steps_done']} steps)"
                )
            else:
                parts.append(f"{kind}: 50 % of final at {reach(points, 0.5)}, 90 % at {reach(points, 0.9)}; "
                             f"final {100 * points[-1]['success_rate']:.0f} % at {run['train_minutes']:.1f} min "
                             f"({run['steps_done']} steps)")  # fmt: skip
    return "; ".join(parts)


def speed_cell(m: dict, policy: str) -> str:
    entries = [(policy, m["speed"][policy])] + (
        [("student", m["speed"]["student"])] if policy == "diffusion" and "student" in m["speed"] else []
    )
    parts = []
    for owner, bench in entries:
        for name, v in bench["variants"].items():
            label = (
                "consistency student " + name
                if owner == "student"
                else ("" if name == "as trained" else name + ": ")
            )
            parts.append(f"{label}{v['chunk_call_ms']['p50']:.1f} ms per model call, {v['select_action_ms']['mean']:.2f} ms "
                         "per control step")  # fmt: skip
    return "; ".join(parts)


def memory_cell(m: dict, policy: str) -> str:
    bench = m["speed"][policy]
    training = [
        m["runs"][name]["train_peak_memory_mb"] for name in m["runs"] if m["runs"][name]["policy"] == policy
    ]
    inference = max(v["peak_memory_mb"] or 0 for v in bench["variants"].values())
    trained = (
        f"{max(t for t in training if t is not None):.0f} MB"
        if any(t is not None for t in training)
        else "n/a"
    )
    return (f"{bench['parameters'] / 1e6:.2f} M parameters, weights {bench['checkpoint_mb']:.1f} MB, training peak "
            f"{trained}, inference {inference:.0f} MB")  # fmt: skip


def modes_cell(m: dict, policy: str) -> str:
    probe = (m.get("probe") or {}).get(policy)
    if not probe or not probe["split_states"]:
        return "not measured (no start state with split demonstrations)"
    return (f"covers {probe['covered_modes']:.1f} of {probe['demonstrated_modes']:.1f} demonstrated modes, predicts "
            f"{probe['policy_modes']:.1f} modes; {100 * probe['off_mode_share']:.0f} % of chunks off the demonstrations; "
            f"{100 * probe['committed_rollout_share']:.0f} % of rollouts commit to a demonstrated mode "
            f"({probe['split_states']} start states, first {m['probe']['horizon']} actions)")  # fmt: skip


def tuning_cell(m: dict, policy: str) -> str:
    t = (m.get("tuning") or {}).get(policy)
    if not t:
        return "not measured"
    if not t["completed"]:
        return f"no trial of {t['trials']} finished"
    top = max(t["importance"].items(), key=lambda kv: kv[1]) if t["importance"] else None
    important = f"; most important: {top[0]} ({top[1]:.2f})" if top else ""
    return (f"best - median {t['objective']} = {t['spread_best_minus_median']:.3f} (best {t['best']:.3f}, median "
            f"{t['median']:.3f}; {t['completed']} trials of {t['steps_per_trial']} steps){important}")  # fmt: skip


def best_for(m: dict, policy: str, other: str | None) -> str:
    """The rows where `policy` measured ahead of `other`, with the numbers."""
    if other is None:
        return "only one policy was studied"
    step_ms = {
        p: min(v["select_action_ms"]["mean"] for v in m["speed"][p]["variants"].values())
        for p in (policy, other)
    }
    ahead = []
    if step_ms[policy] < step_ms[other]:
        ahead.append(
            f"low-latency control ({step_ms[policy]:.2f} ms per control step against {step_ms[other]:.2f})"
        )
    for kind in ("consistent", "diverse"):
        mine, theirs = final_success(m, policy, kind), final_success(m, other, kind)
        if mine and theirs and mine["success_rate"] > theirs["success_rate"]:
            ahead.append(
                f"{kind} demonstrations ({100 * mine['success_rate']:.0f} % against {100 * theirs['success_rate']:.0f} %)"
            )
    probe = m.get("probe") or {}
    if probe.get(policy, {}).get("covered_modes") and probe[policy]["covered_modes"] > (
        probe.get(other, {}).get("covered_modes") or 0
    ):
        ahead.append(f"multi-modal demonstrations ({probe[policy]['covered_modes']:.1f} against "
                     f"{probe[other]['covered_modes']:.1f} demonstrated modes covered)")  # fmt: skip
    if not ahead:
        return f"ahead of {NAMES[other]} on no measured row here"
    return "; ".join(ahead)


def table(m: dict) -> list[tuple[str, ...]]:
    policies = [p for p in ("act", "diffusion") if p in m["speed"]]
    other = {p: next((q for q in policies if q != p), None) for p in policies}
    cells = {
        "Inference speed": speed_cell,
        "Training": training_cell,
        "Success rate (consistent demonstrations)": lambda m, p: success_cell(m, p, "consistent"),
        "Success rate (diverse demonstrations)": lambda m, p: success_cell(m, p, "diverse"),
        "Multi-modal support": modes_cell,
        "Memory": memory_cell,
        "Ease of tuning": tuning_cell,
        "Best for": lambda m, p: best_for(m, p, other[p]),
    }
    return [("", *(NAMES[p] for p in policies))] + [
        (row, *(cells[row](m, p) for p in policies)) for row in ROWS
    ]


# -- figures ------------------------------------------------------------------------------------------------


def plot_curves(m: dict, path: Path) -> Path:
    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    success_axes, coverage_axes = figure.subplots(1, 2)
    for name, points in m["curves"].items():
        run = m["runs"][name]
        style = {"color": "tab:blue" if run["policy"] == "act" else "tab:red",
                 "linestyle": "-" if run["demonstrations"] == "consistent" else "--", "marker": "o"}  # fmt: skip
        label = f"{NAMES[run['policy']]}, {run['demonstrations']} (seed {run['seed']})"
        minutes = [p["minutes"] for p in points]
        success_axes.plot(minutes, [100 * p["success_rate"] for p in points], label=label, **style)
        coverage_axes.plot(minutes, [p["avg_max_reward"] for p in points], label=label, **style)
    success_axes.set(xlabel="training minutes", ylabel="success %", ylim=(0, 100), title="success rate")
    coverage_axes.set(xlabel="training minutes", ylabel="mean max coverage", ylim=(0, 1), title="coverage")
    for axes in (success_axes, coverage_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.savefig(path)
    return path


def plot_modes(m: dict, path: Path, max_states: int = 4) -> Path | None:
    probe = m.get("probe")
    policies = [p for p in ("act", "diffusion") if probe and probe.get(p) and probe[p]["per_state"]]
    if not policies:
        return None
    seeds = [s["seed"] for s in probe[policies[0]]["per_state"]][:max_states]
    states = {s["seed"]: s for s in probe["states"]}
    figure = Figure(figsize=(3.4 * len(seeds), 3.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(seeds)))
    colors = {"act": "tab:blue", "diffusion": "tab:red"}
    for ax, seed in zip(axes, seeds, strict=True):
        state = states[seed]
        keypoints = np.asarray(state["observation"]["observation.environment_state"]).reshape(-1, 2)
        ax.scatter(*keypoints.T, s=6, color="tab:gray")
        ax.scatter(*state["observation"]["observation.state"], s=30, color="black", zorder=3)
        for k, chunk in enumerate(np.asarray(state["demonstrated"])):
            ax.plot(*chunk.T, color="tab:green", alpha=0.6, lw=1, label="demonstrated" if k == 0 else None)
        for policy in policies:
            entry = next(s for s in probe[policy]["per_state"] if s["seed"] == seed)
            for k, chunk in enumerate(np.asarray(entry["chunks"])):
                ax.plot(
                    *chunk.T, color=colors[policy], alpha=0.5, lw=1, label=NAMES[policy] if k == 0 else None
                )
        ax.set(xlim=(0, 512), ylim=(512, 0), aspect="equal", title=f"start state {seed}")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="lower left")
    figure.suptitle("action chunks from one start observation: demonstrated vs predicted", fontsize=10)
    figure.savefig(path)
    return path


# -- files --------------------------------------------------------------------------------------------------


def write_study_report(m: dict, folder: Path, command: str) -> list[Path]:
    """study.md, study.html (figures embedded), study.json and the PNGs, in `folder`; returns their paths."""
    rows = table(m)
    figures = [plot_curves(m, folder / "learning_curves.png")]
    modes_png = plot_modes(m, folder / "multimodality.png")
    figures += [modes_png] if modes_png else []
    minutes = m["budget"]["minutes_per_run"]
    steps = ", ".join(f"{NAMES[p]} {s}" for p, s in m["budget"]["steps"].items())
    budget = (
        f"{minutes:g} training minutes per run (steps: {steps})" if minutes else f"steps per run: {steps}"
    )
    amp = [NAMES[p] for p, on in m.get("mixed_precision", {}).items() if on]
    budget += f"; {', '.join(amp)} in bfloat16 mixed precision, the rest float32" if amp else "; float32"
    header = (f"Measured on {m['machine']} ({m['device']}), {budget}, datasets of "
              f"{next(iter(m['datasets'].values()))['episodes']} episodes. Reproduce: `{command}`")  # fmt: skip
    md = ["# ACT vs Diffusion Policy, measured", "", header, "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]  # fmt: skip
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md += ["", *[f"- {d}" for d in DEFINITIONS], "", *[f"![{p.stem}]({p.name})" for p in figures], ""]
    paths = [folder / "study.md", folder / "study.html", folder / "study.json"]
    paths[0].write_text("\n".join(md))
    paths[1].write_text(_html(rows, header, figures))
    write_json(paths[2], {**m, "table": [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]})
    return paths + figures


def _html(rows: list[tuple[str, ...]], header: str, figures: list[Path]) -> str:
    def cell(tag: str, text: str) -> str:
        return f"<{tag}>{html.escape(text)}</{tag}>"

    body = [f"<h1>ACT vs Diffusion Policy, measured</h1><p>{html.escape(header)}</p><table>"]
    body += [
        "<tr>" + "".join(cell("th" if i == 0 or j == 0 else "td", c) for j, c in enumerate(r)) + "</tr>"
        for i, r in enumerate(rows)
    ]
    body += ["</table><ul>", *[cell("li", d) for d in DEFINITIONS], "</ul>"]
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f'<img alt="{path.stem}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}img{max-width:100%;display:block}")  # fmt: skip
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>ACT vs Diffusion Policy</title><style>{style}'
        f"</style></head><body>{''.join(body)}</body></html>\n"
    )
