"""The `policylab` command: one sub-command per job, each a parse step (flags -> config, no work done) and a
thin run step over the library."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policylab.errors import ConfigError, FlagError, PolicylabError, did_you_mean
from policylab.flags import parse_flags
from policylab.utils.memory import keep_freed_memory


def parse_record(args: list[str]):
    from policylab.experts.record import RecordConfig

    return parse_flags(RecordConfig, args, "policylab record")


def record(config) -> None:
    from policylab.datasets import LeRobotDatasetWriter
    from policylab.experts.record import record_dataset, summarize_recording

    started = time.perf_counter()
    try:
        root = record_dataset(config)
    except KeyboardInterrupt:
        committed = LeRobotDatasetWriter.count_committed(config.dataset.folder)
        print(
            f"\npolicylab record: interrupted; {committed} complete episodes are in {config.dataset.folder}. "
            "Rerun the same command to resume.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    summary = summarize_recording(root)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))
    if summary["episodes_written"] < config.dataset.num_episodes:
        print(
            f"policylab record: error: {summary['episodes_written']} of {config.dataset.num_episodes} episodes written "
            f"to {root.resolve()}: the expert succeeded in {summary['episodes_succeeded']} of "
            f"{summary['episodes_attempted']} attempts before --max_attempts ran out",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(f"dataset written to {root.resolve()}")


def parse_train(args: list[str]):
    from policylab.training import TrainConfig

    config = parse_flags(TrainConfig, args, "policylab train", defaults_path=_saved_run_config(args))
    # a run's length is --training.steps or --training.num_epochs: the one on the command line replaces the
    # other from a --config_path preset or a resumed run
    given = {a.split("=", 1)[0] for a in args}
    if "--training.num_epochs" in given and "--training.steps" not in given:
        config.training.steps = None
    elif "--training.steps" in given and "--training.num_epochs" not in given:
        config.training.num_epochs = None
    return config


def train(config) -> None:
    from policylab.training import train as run_training

    evaluate = None
    if config.training.eval_freq:
        from policylab.constants import HELD_OUT_SEED
        from policylab.evaluation import evaluate_policy

        def evaluate(policy) -> dict:
            results = evaluate_policy(
                policy, "pusht", n_episodes=config.training.eval_episodes, seed=HELD_OUT_SEED, progress=False
            )
            return {k: v for k, v in results.items() if isinstance(v, (int, float))}

    output_dir = config.output_dir or config.default_output_dir()
    config.output_dir = output_dir
    try:
        run_training(config, evaluate)
    except KeyboardInterrupt:
        print(
            f"\npolicylab train: interrupted; checkpoints are in {output_dir}/checkpoints. "
            f"Continue with: policylab train --output_dir={output_dir} --resume=true",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, once
        print(
            f"checkpoints written to {Path(output_dir, 'checkpoints').resolve()} (newest: checkpoints/last)"
        )


def parse_eval(args: list[str]):
    from policylab.evaluation.configs import EvalConfig
    from policylab.runs import split_policy_overrides

    overrides, args = split_policy_overrides(args)
    config = parse_flags(EvalConfig, args, "policylab eval")
    offline = config.dataset.given and not any(a.startswith("--env.") for a in args)  # no simulator named
    return config, overrides, offline


def eval(parsed) -> None:  # noqa: A001 (the command's name)
    from policylab.evaluation.evaluate import run_eval

    run_eval(*parsed)


def parse_bench(args: list[str]):
    from policylab.evaluation.benchmark import BenchConfig
    from policylab.runs import split_policy_overrides

    overrides, args = split_policy_overrides(args)
    return parse_flags(BenchConfig, args, "policylab bench"), overrides


def bench(parsed) -> None:
    from policylab.evaluation.benchmark import run_bench

    run_bench(*parsed)


def parse_plot(args: list[str]):
    from policylab.report.plots import PlotConfig
    from policylab.runs import split_policy_overrides

    overrides, args = split_policy_overrides(args)
    return parse_flags(PlotConfig, args, "policylab plot"), overrides


def plot(parsed) -> None:
    from policylab.report.plots import run_plot

    run_plot(*parsed)


def parse_compare(args: list[str]):
    from policylab.report.compare import CompareConfig

    config = parse_flags(CompareConfig, _list_flag(args, "--policies"), "policylab compare")
    return config, config.dataset.given and not any(
        a.startswith("--env.") for a in args
    )  # offline: no simulator


def compare(parsed) -> None:
    from policylab.report.compare import run_compare

    run_compare(*parsed)


def parse_pretrain(args: list[str]):
    from policylab.training.pretrain import PRETRAIN_CONFIG, PretrainConfig

    saved = _saved_run_config(args, PRETRAIN_CONFIG)
    return parse_flags(PretrainConfig, args, "policylab pretrain", defaults_path=saved)


def pretrain(config) -> None:
    from policylab.constants import PRETRAIN_INFO
    from policylab.training.pretrain import run_pretrain

    try:
        output_dir = run_pretrain(config)
    except KeyboardInterrupt:
        print(
            f"\npolicylab pretrain: interrupted; continue with: policylab pretrain --output_dir={config.output_dir} "
            "--resume=true",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    info = json.loads(Path(output_dir, PRETRAIN_INFO).read_text())
    if "held_out" in info:
        print(
            f"{info['target']} predicted from the frames of {len(info['held_out_episodes'])} held-out episodes "
            f"with a mean |error| of {info['held_out']['target_l1']:.3g} (dataset units)"
        )
    print(
        f"pretrained trunk written to {Path(output_dir).resolve()}; start a policy from it with "
        f"policylab train --init_from={output_dir} and the same --policy.* flags (--training.lr_backbone=0 "
        "keeps it frozen)"
    )


def parse_distill(args: list[str]):
    from policylab.training.distill import DISTILL_CONFIG, DistillConfig

    saved = _saved_run_config(args, DISTILL_CONFIG)
    return parse_flags(DistillConfig, args, "policylab distill", defaults_path=saved)


def distill(config) -> None:
    from policylab.training.distill import run_distill

    try:
        output_dir = run_distill(config)
    except KeyboardInterrupt:
        print(
            f"\npolicylab distill: interrupted; continue with: policylab distill --output_dir={config.output_dir} "
            "--resume=true",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    print(
        f"student checkpoints written to {Path(output_dir, 'checkpoints').resolve()} (newest: checkpoints/last)"
    )


def parse_tune(args: list[str]):
    """(tune config, tune flags, the train flags every trial shares); train flags are checked when it runs."""
    from policylab.flags import format_help
    from policylab.tuning import TuneConfig
    from policylab.tuning.configs import TUNE_PREFIXES

    if any(a in ("-h", "--help") for a in args):
        print(format_help("policylab tune", TuneConfig))
        print(
            "\nEvery other flag is a `policylab train` flag shared by all trials (see `policylab train --help`)."
        )
        raise SystemExit(0)
    tune_args = [a for a in args if a.startswith(TUNE_PREFIXES)]
    train_args = [a for a in args if not a.startswith(TUNE_PREFIXES)]
    # the search space is JSON, read as such: draccus would parse it as YAML (where 1e-5 is a string)
    space = [a.split("=", 1)[1] for a in tune_args if a.startswith("--tune.space=")]
    config = parse_flags(
        TuneConfig, [a for a in tune_args if not a.startswith("--tune.space=")], "policylab tune"
    )
    config.tune.space = space[-1] if space else None
    return config, tune_args, train_args


def tune(parsed) -> None:
    from policylab.tuning import run_tune
    from policylab.tuning.report import write_report

    config, tune_args, train_args = parsed
    try:
        study = run_tune(config, tune_args, train_args)
    except KeyboardInterrupt:
        print(
            f"\npolicylab tune: interrupted; the study in {config.storage_url} keeps its finished trials. "
            "Rerun the same command to resume it.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if config.tune.worker_id != 0:
        return
    for path in write_report(study, config.tune.objective, train_args, Path(config.folder)):
        print(f"written: {path.resolve()}")


def parse_study(args: list[str]):
    from policylab.study import StudyConfig

    return parse_flags(StudyConfig, args, "policylab study"), args


def study(parsed) -> None:
    import shlex

    from policylab.report.study import write_study_report
    from policylab.study import run_study

    config, args = parsed
    try:
        measurements = run_study(config)
    except KeyboardInterrupt:
        print(
            f"\npolicylab study: interrupted; rerun the same command to resume it ({config.output_dir})",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    command = shlex.join(["policylab", "study", *args])
    for path in write_study_report(measurements, Path(config.output_dir), command):
        print(f"written: {path.resolve()}")


def parse_export(args: list[str]):
    from policylab.runs import ExportConfig

    return parse_flags(ExportConfig, args, "policylab export")


def export(config) -> None:
    from policylab.runs import run_export

    run_export(config)


def _list_flag(args: list[str], flag: str) -> list[str]:
    """`--policies A B C` (values separated by spaces, as shells expand globs) and `--policies=A` as
    `--policies=[A,B,C]`."""
    args = [f"{a}]".replace("=", "=[", 1) if a.startswith(flag + "=") and "[" not in a else a for a in args]
    if flag not in args:
        return args
    start = args.index(flag)
    end = next((i for i in range(start + 1, len(args)) if args[i].startswith("--")), len(args))
    return [*args[:start], f"{flag}=[{','.join(args[start + 1 : end])}]", *args[end:]]


def _saved_run_config(args: list[str], name: str = "train_config.json") -> Path | None:
    """With --resume=true, the run's saved config file supplies every flag not given again."""
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if flags.get("resume", "false").lower() not in ("true", "1", "yes") or "output_dir" not in flags:
        return None
    saved = Path(flags["output_dir"]) / name
    if not saved.is_file():
        return None
    try:
        json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"--resume=true: {saved} is not readable JSON ({error})") from None
    return saved


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Command:
    parse: Callable[[list[str]], object]  # flags -> what run takes; reads no data, writes nothing
    run: Callable[[object], None]
    description: str


COMMANDS = {
    "record": Command(parse_record, record, "record expert demonstrations into a LeRobot-format dataset"),
    "train": Command(
        parse_train, train, "train a policy (ACT, Diffusion) on a dataset and write checkpoints"
    ),
    "eval": Command(parse_eval, eval, "roll a trained policy out in the simulator and measure it"),
    "bench": Command(parse_bench, bench, "time a trained policy's inference at batch 1"),
    "plot": Command(
        parse_plot, plot, "draw a policy's predicted vs demonstrated actions, and its training curves"
    ),
    "compare": Command(
        parse_compare, compare, "evaluate and benchmark several policies on the same seeds into one report"
    ),
    "pretrain": Command(
        parse_pretrain,
        pretrain,
        "pretrain a policy's camera trunk to predict a recorded feature from the frames",
    ),
    "distill": Command(
        parse_distill, distill, "distill a trained Diffusion Policy into a 1-to-few-step consistency student"
    ),
    "study": Command(
        parse_study,
        study,
        "ACT vs Diffusion on consistent and diverse demonstrations: every table cell measured",
    ),
    "export": Command(
        parse_export, export, "write a trained policy as a LeRobot 0.6 checkpoint (--to=lerobot)"
    ),
    "tune": Command(
        parse_tune,
        tune,
        "search training settings with Optuna (train + evaluate per trial), resumable, parallel",
    ),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: policylab <command> [--flag=value ...]\n\ncommands:")
        for name, command in COMMANDS.items():
            print(f"  {name:<10}{command.description}")
        print("\n`policylab <command> --help` lists every flag of a command with its default.")
        return
    name, *args = argv
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops as cleanly as Ctrl-C
    try:
        if name not in COMMANDS:
            raise FlagError(
                f"unknown command '{name}'; {did_you_mean(name, COMMANDS)}commands: {', '.join(COMMANDS)}"
            )
        command = COMMANDS[name]
        command.run(command.parse(args))
    except PolicylabError as error:  # the one printer of every error a user's input caused
        prog = f"policylab {name}" if name in COMMANDS else "policylab"
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None


if __name__ == "__main__":
    main()
