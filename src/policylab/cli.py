"""The `policylab` command: one sub-command per job, each a thin function over the library."""

from __future__ import annotations

import difflib
import json
import signal
import sys
import time
from pathlib import Path

from policylab.errors import PolicylabError
from policylab.flags import ConfigError, FlagError, parse_flags
from policylab.utils.memory import keep_freed_memory


def record(args: list[str]) -> None:
    from policylab.datasets import LeRobotDatasetWriter
    from policylab.experts.record import RecordConfig, record_dataset, summarize_recording

    config = parse_flags(RecordConfig, args, "policylab record")
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


def train(args: list[str]) -> None:
    from policylab.training import TrainConfig
    from policylab.training import train as run_training

    config = parse_flags(TrainConfig, args, "policylab train", defaults_path=_saved_run_config(args))
    evaluate = None
    if config.training.eval_freq:
        from policylab.evaluation import evaluate_policy
        from policylab.evaluation.configs import HELD_OUT_SEED

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
    print(f"checkpoints written to {Path(output_dir, 'checkpoints').resolve()} (newest: checkpoints/last)")


def eval(args: list[str]) -> None:  # noqa: A001 (the command's name)
    from policylab.evaluation.configs import EvalConfig, split_policy_overrides
    from policylab.evaluation.evaluate import run_eval

    overrides, args = split_policy_overrides(args)
    run_eval(parse_flags(EvalConfig, args, "policylab eval"), overrides)


def bench(args: list[str]) -> None:
    from policylab.evaluation.benchmark import BenchConfig, run_bench
    from policylab.evaluation.configs import split_policy_overrides

    overrides, args = split_policy_overrides(args)
    run_bench(parse_flags(BenchConfig, args, "policylab bench"), overrides)


def plot(args: list[str]) -> None:
    from policylab.evaluation.configs import split_policy_overrides
    from policylab.visualize import PlotConfig, run_plot

    overrides, args = split_policy_overrides(args)
    run_plot(parse_flags(PlotConfig, args, "policylab plot"), overrides)


def compare(args: list[str]) -> None:
    from policylab.evaluation.compare import CompareConfig, run_compare

    run_compare(parse_flags(CompareConfig, _list_flag(args, "--policies"), "policylab compare"))


def distill(args: list[str]) -> None:
    from policylab.training.distill import DISTILL_CONFIG, DistillConfig, run_distill

    saved = _saved_run_config(args, DISTILL_CONFIG)
    config = parse_flags(DistillConfig, args, "policylab distill", defaults_path=saved)
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


def tune(args: list[str]) -> None:
    from policylab.flags import format_help
    from policylab.tuning import TuneConfig, run_tune
    from policylab.tuning.configs import TUNE_PREFIXES
    from policylab.tuning.report import write_report

    if any(a in ("-h", "--help") for a in args):
        print(format_help("policylab tune", TuneConfig))
        print(
            "\nEvery other flag is a `policylab train` flag shared by all trials (see `policylab train --help`)."
        )
        return
    tune_args = [a for a in args if a.startswith(TUNE_PREFIXES)]
    train_args = [a for a in args if not a.startswith(TUNE_PREFIXES)]
    # the search space is JSON, read as such: draccus would parse it as YAML (where 1e-5 is a string)
    space = [a.split("=", 1)[1] for a in tune_args if a.startswith("--tune.space=")]
    config = parse_flags(
        TuneConfig, [a for a in tune_args if not a.startswith("--tune.space=")], "policylab tune"
    )
    config.tune.space = space[-1] if space else None
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


def _list_flag(args: list[str], flag: str) -> list[str]:
    """`--policies A B C` (values separated by spaces, as shells expand globs) as `--policies=[A,B,C]`."""
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


COMMANDS = {
    "record": (record, "record expert demonstrations into a LeRobot-format dataset"),
    "train": (train, "train a policy (ACT, Diffusion) on a dataset and write checkpoints"),
    "eval": (eval, "roll a trained policy out in the simulator and measure it"),
    "bench": (bench, "time a trained policy's inference at batch 1"),
    "plot": (plot, "draw a policy's predicted vs demonstrated actions, and its training curves"),
    "compare": (compare, "evaluate and benchmark several policies on the same seeds into one report"),
    "distill": (distill, "distill a trained Diffusion Policy into a 1-to-few-step consistency student"),
    "tune": (tune, "search training settings with Optuna (train + evaluate per trial), resumable, parallel"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: policylab <command> [--flag=value ...]\n\ncommands:")
        for name, (_, description) in COMMANDS.items():
            print(f"  {name:<10}{description}")
        print("\n`policylab <command> --help` lists every flag of a command with its default.")
        return
    command, *args = argv
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops as cleanly as Ctrl-C
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise FlagError("policylab", f"unknown command '{command}'; {hint}commands: {', '.join(COMMANDS)}")
    try:
        COMMANDS[command][0](args)
    except ConfigError as error:
        raise FlagError(f"policylab {command}", str(error)) from None
    except PolicylabError as error:
        print(f"policylab {command}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
