"""What a finished study leaves behind: tune_results.csv and .md, best_train_command.txt, PNG plots."""

from __future__ import annotations

import csv
import shlex
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from policylab.tuning.space import as_flag, decode_choice  # noqa: E402
from policylab.tuning.study import ERROR_ATTR  # noqa: E402

RESULTS_CSV, RESULTS_MD, BEST_COMMAND = "tune_results.csv", "tune_results.md", "best_train_command.txt"
PLOTS = {
    "tune_history.png": "objective per trial, with the best so far",
    "tune_importance.png": "parameter importance (fANOVA)",
    "tune_slices.png": "objective against each parameter",
}


def write_report(study: optuna.Study, objective: str, train_args: list[str], folder: Path) -> list[Path]:
    """Write every output of the study into `folder`; returns the paths written."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    params = sorted({name for t in trials for name in t.params})
    written = [_write_csv(trials, params, folder / RESULTS_CSV)]
    best = _best(study)
    command = None
    if best is not None:
        command = best_train_command(train_args, best, folder)
        (folder / BEST_COMMAND).write_text(command + "\n")
        written.append(folder / BEST_COMMAND)
    (folder / RESULTS_MD).write_text(_markdown(study, trials, params, objective, best, command))
    written.append(folder / RESULTS_MD)
    written += _plots(study, objective, folder)
    return written


def best_train_command(train_args: list[str], best: FrozenTrial, folder: Path) -> str:
    """The `policylab train` command line that reproduces the best trial's settings."""
    flags = [as_flag(name, decode_choice(value)) for name, value in best.params.items()]
    return shlex.join(["policylab", "train", *train_args, *flags, f"--output_dir={folder / 'best'}"])


def _best(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return study.best_trial if complete else None


def _write_csv(trials: list[FrozenTrial], params: list[str], path: Path) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", *params, "last_step", "minutes", "error", "output_dir"])
        for t in trials:
            last_step = max(t.intermediate_values) if t.intermediate_values else ""
            minutes = round(t.duration.total_seconds() / 60, 2) if t.duration else ""
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                             *[t.params.get(p, "") for p in params], last_step, minutes,
                             t.user_attrs.get(ERROR_ATTR, ""), t.user_attrs.get("output_dir", "")])  # fmt: skip
    return path


def _markdown(study, trials, params, objective, best, command) -> str:
    direction = "higher" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "lower"
    counts = {
        s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if s != TrialState.WAITING
    }
    lines = [
        f"# Study `{study.study_name}`: {objective} ({direction} is better)",
        "",
        ", ".join(f"{n} {state}" for state, n in counts.items() if n),
        "",
    ]
    if best is not None:
        lines += [f"Best: trial {best.number}, {objective} = {best.value:.4g}", "", "```", command, "```", ""]
    ordered = sorted(
        trials, key=lambda t: (t.value is None, -(t.value or 0) if direction == "higher" else (t.value or 0))
    )
    lines += [f"| trial | state | {objective} | " + " | ".join(params) + " | minutes |",
              "|---" * (len(params) + 4) + "|"]  # fmt: skip
    for t in ordered:
        value = "" if t.value is None else f"{t.value:.4g}"
        if t.state == TrialState.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"pruned at step {step} ({t.intermediate_values[step]:.3g})"
        if t.state == TrialState.FAIL:
            value = t.user_attrs.get(ERROR_ATTR, "process killed")[:80].replace("|", "/")
        minutes = f"{t.duration.total_seconds() / 60:.1f}" if t.duration else ""
        cells = [_show(t.params.get(p, "")) for p in params]
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | " + " | ".join(cells) + f" | {minutes} |"
        )
    lines += ["", "Plots: " + ", ".join(f"`{name}` ({what})" for name, what in PLOTS.items()), ""]
    return "\n".join(lines)


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plots(study: optuna.Study, objective: str, folder: Path) -> list[Path]:
    """The PNGs Optuna's matplotlib backend can draw for this study (importance needs 2+ finished trials)."""
    from optuna.visualization import matplotlib as views

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    makers = {"tune_history.png": lambda: views.plot_optimization_history(study, target_name=objective)}
    if len(complete) >= 2 and any(t.params for t in complete):
        makers["tune_importance.png"] = lambda: views.plot_param_importances(study)
        makers["tune_slices.png"] = lambda: views.plot_slice(study, target_name=objective)
    written = []
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib views experimental
            try:
                axes = make()
            except (ValueError, RuntimeError) as error:  # e.g. every trial scored the same: no importance
                print(f"policylab tune: {name} not drawn: {error}")
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        if hasattr(axes, "flat"):  # one panel per parameter, each wide enough for its tick labels
            figure.set_size_inches(3.6 * len(axes.flat) + 1.5, 3.6)
        for ax in figure.axes:  # log axes: label the decades only (Optuna labels every minor tick)
            if ax.get_xscale() == "log":
                ax.xaxis.set_minor_formatter(NullFormatter())
        figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(folder / name)
    return written
