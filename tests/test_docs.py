"""Every command the README and docs/ show works as written: each `policylab` command line parses with the
real command's parser (flag names, types, choices, config checks), each benchmark command with its script's
parser, each `make` target exists; every path a command reads was written by a command before it on the page
(or by `make demo`, or is committed); and every Python block runs, on a tiny recorded dataset standing in for data/pusht."""

import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from policylab.cli import COMMANDS
from policylab.flags import parse_flags
from policylab.policies import ACTConfig, DiffusionConfig
from policylab.training import TrainConfig

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MADE_BY_MAKE_DEMO = {
    "outputs/demo/pusht",
    "outputs/demo/act",
    "outputs/demo/diffusion",
    "outputs/demo/report",
}
POLICY_FIELDS = {f.name for config in (ACTConfig, DiffusionConfig) for f in dataclasses.fields(config)}
READ_FLAGS = ("--policy.path", "--teacher.path", "--student.path", "--init_from", "--dataset-root", "--root")


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def shell_commands(page: Path) -> list[list[str]]:
    """Each command line of the page's bash blocks as argv (continuations joined, comments dropped)."""
    commands = []
    for block in code_blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "torchrun":
                argv = argv[argv.index("policylab") :]
            if argv:
                commands.append(argv)
    return commands


def check_policylab(args: list[str]) -> None:
    name, *flags = args
    assert name in COMMANDS, f"no command {name}"
    if "--help" in flags:
        return
    parsed = COMMANDS[name].parse(flags)
    if name in ("eval", "bench", "plot"):
        fields = {o[len("--policy.") :].split("=")[0] for o in parsed[1]}
        assert fields <= POLICY_FIELDS, f"no policy field {fields - POLICY_FIELDS}"
    if name == "tune":
        parse_flags(TrainConfig, parsed[2], "policylab tune")


def check_benchmark(script: str, flags: list[str]) -> None:
    path = ROOT / script
    assert path.parent == ROOT / "benchmarks", f"{script} is not a maintained benchmark (benchmarks/*.py)"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "build_parser"):
        assert not flags, f"{script} takes no flags"
        return
    if path.stem == "learning_curve":  # other flags go to policylab train, checked for every policy named
        args, train_flags = module.build_parser().parse_known_args(flags)
        module.check_flags(args.policies.split(","), train_flags)
    else:
        module.build_parser().parse_args(flags)


def check(argv: list[str]) -> None:
    if argv[0] == "policylab":
        check_policylab(argv[1:])
    elif argv[0] == "python":
        check_benchmark(argv[1], argv[2:])
    elif argv[0] == "make":
        targets = re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert set(argv[1:]) <= set(targets), f"no make target {set(argv[1:]) - set(targets)}"
    else:
        raise AssertionError(f"the test does not know how to check `{argv[0]}`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_shell_command_parses(page):
    commands = shell_commands(page)
    for argv in commands:
        try:
            check(argv)
        except (Exception, SystemExit) as error:
            raise AssertionError(f"{page.name}: `{shlex.join(argv)}`: {error}") from None


def values(argv: list[str], flag: str) -> list[str]:
    """The values of `flag` in argv: `--flag=v`, `--flag v`, and `--policies A B` lists."""
    out = [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
    if flag in argv:
        start = argv.index(flag) + 1
        out += [
            a
            for a in argv[start:][: next((i for i, a in enumerate(argv[start:]) if a.startswith("--")), None)]
        ]
    return out


def written_and_read(argv: list[str]) -> tuple[set[str], set[str]]:
    """The folders a command writes and the ones it reads (datasets in the data home as 'repo:<id>')."""
    name = argv[1] if argv[0] == "policylab" else Path(argv[1]).stem if argv[0] == "python" else ""
    outputs = set(values(argv, "--output_dir"))
    reads = {re.sub(r"/checkpoints/(last|\d+)$", "", v) for f in READ_FLAGS for v in values(argv, f)}
    if name == "compare":
        reads |= set(values(argv, "--policies"))
    reads |= {f"repo:{v}" for v in values(argv, "--dataset.repo_id")}
    if name == "record":
        outputs |= set(values(argv, "--dataset.root")) or {
            f"repo:{(values(argv, '--dataset.repo_id') or ['pusht'])[0]}"
        }
        reads -= {f"repo:{v}" for v in values(argv, "--dataset.repo_id")}
    else:
        reads |= set(values(argv, "--dataset.root"))
    if name == "learning_curve":
        curve = values(argv, "--output-dir")[0]
        policies = (values(argv, "--policies") or ["act,diffusion"])[0].split(",")
        outputs |= {curve, *(f"{curve}/{p}" for p in policies)}
    return outputs, reads


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_paths_a_command_reads_were_written_before_on_the_page(page):
    made = set(MADE_BY_MAKE_DEMO)
    for argv in shell_commands(page):
        outputs, reads = written_and_read(argv)
        missing = {path for path in reads - made if not (ROOT / path).exists()}  # committed data counts
        assert not missing, (
            f"{page.name}: `{shlex.join(argv)}` reads {sorted(missing)}, which no command before it writes"
        )
        made |= outputs


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if code_blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page, recorded_pusht, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/pusht").symlink_to(recorded_pusht)
    for block in code_blocks(page, "python"):
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, f"{page.name}:\n{block}\n{result.stderr[-3000:]}"
