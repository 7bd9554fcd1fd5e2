"""The `policylab` command: one sub-command per job, each a thin function over the library."""

from __future__ import annotations

import difflib
import json
import signal
import sys
import time

from policylab.datasets.errors import DatasetError
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
        committed = LeRobotDatasetWriter.count_committed(config.dataset.root)
        print(
            f"\npolicylab record: interrupted; {committed} complete episodes are in {config.dataset.root}. "
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


COMMANDS = {
    "record": (record, "record expert demonstrations into a LeRobot-format dataset"),
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
    except DatasetError as error:
        print(f"policylab {command}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
