"""Dotted command-line flags over config dataclasses (parsed by draccus), with the help and errors users need.

draccus does the parsing (`--dataset.root=...`, `--env.type=pusht` choosing a registered config class).
This module adds what it lacks: `--help` that lists every flag with its default and description, an
unknown flag answered with the closest valid names, and a bad value reported as one line naming the flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import textwrap
import typing
import warnings
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path

import draccus
from draccus.utils import DecodingError, ParsingError

from policylab.errors import FlagError, did_you_mean

CONFIG_PATH = "config_path"  # draccus reads a config file given with --config_path=FILE


@dataclasses.dataclass
class Flag:
    name: str
    type_name: str
    default: object
    doc: str


def _field_docs(cls: type) -> dict[str, str]:
    """'name: description' entries of the docstrings of a dataclass and its bases; a description continues on
    the lines indented deeper than its name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        current, indent = None, None
        for line in (klass.__doc__ or "").splitlines():
            depth = len(line) - len(line.lstrip())
            match = re.match(r"^\s*([a-z_]\w*(?:,\s*[a-z_]\w*)*):\s+(.*)$", line)
            if match and (indent is None or depth <= indent):
                indent = depth
                current = [name.strip() for name in match.group(1).split(",")]
                for name in current:
                    docs[name] = match.group(2).strip()
            elif current and line.strip() and depth > indent:
                for name in current:
                    docs[name] += " " + line.strip()
            else:
                current = None
    return docs


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _default_of(field: dataclasses.Field):
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return None


def list_flags(config: object, prefix: str = "") -> list[Flag]:
    """Every flag of a config instance, recursing into nested configs (for choice types: the chosen one)."""
    flags = []
    cls = type(config)
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    if isinstance(config, draccus.ChoiceRegistry):
        choices = ", ".join(cls.get_known_choices())
        flags.append(Flag(f"{prefix}type", f"{{{choices}}}", cls.get_choice_name(cls), "which config to use"))
    for field in fields(cls):
        value = getattr(config, field.name, _default_of(field))
        if is_dataclass(value):
            flags += list_flags(value, f"{prefix}{field.name}.")
        else:
            flags.append(
                Flag(prefix + field.name, _type_name(hints[field.name]), value, docs.get(field.name, ""))
            )
    return flags


def all_flag_names(config_cls: type) -> set[str]:
    """Flag names valid for some choice of every choice-typed field (what a command line may contain)."""
    names = set()

    def visit(cls: type, prefix: str) -> None:
        if issubclass(cls, draccus.ChoiceRegistry):
            names.add(prefix + "type")
            classes = list(cls.get_known_choices().values()) or [cls]
        else:
            classes = [cls]
        for option in classes:
            hints = typing.get_type_hints(option)
            for field in fields(option):
                field_type = hints[field.name]
                if isinstance(field_type, type) and is_dataclass(field_type):
                    names.add(prefix + field.name)
                    visit(field_type, f"{prefix}{field.name}.")
                else:
                    names.add(prefix + field.name)

    visit(config_cls, "")
    return names


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def format_help(prog: str, config_cls: type) -> str:
    lines = [f"usage: {prog} [--flag=value ...]", ""]
    summary = (config_cls.__doc__ or "").strip().split("\n\n")[0]
    if summary:
        lines += [summary, ""]
    for flag in list_flags(config_cls()):
        lines.append(f"  --{flag.name}={_show(flag.default)}  ({flag.type_name})")
        lines += textwrap.wrap(flag.doc, width=100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [
        "",
        "Booleans take true/false; lists take [a,b,c]. The flags of another --X.type appear once it is chosen.",
        f"--{CONFIG_PATH}=FILE reads values from a JSON file of these flags (nested as in the names); flags given",
        "on the command line override it.",
    ]
    return "\n".join(lines)


def _with_default_choices(config_cls: type, args: list[str]) -> list[str]:
    """Add `--X.type=<default>` where `--X.field=...` is given alone (draccus needs the type to decode X)."""
    added = []
    for flag in list_flags(config_cls()):
        if flag.name.endswith("type") and flag.type_name.startswith("{"):
            prefix = flag.name[: -len("type")]
            given = [a[2:].split("=", 1)[0] for a in args]
            if any(name.startswith(prefix) for name in given) and prefix + "type" not in given:
                added.append(f"--{prefix}type={flag.default}")
    return added + args


def parse_flags(config_cls: type, args: list[str], prog: str, defaults_path: str | Path | None = None):
    """Parse `args` into a `config_cls` instance, or raise `FlagError` naming the bad flag.

    `defaults_path`: a JSON file of a saved config whose values replace the defaults (e.g. to resume a run).
    """
    if any(a in ("-h", "--help") for a in args):
        print(format_help(prog, config_cls))
        raise SystemExit(0)
    check_flag_names(config_cls, args, prog)
    config_file = next((a.split("=", 1)[1] for a in args if a.startswith(f"--{CONFIG_PATH}=")), None)
    if config_file is not None:
        _check_json_file(config_file, f"--{CONFIG_PATH}")
    try:
        with warnings.catch_warnings():  # draccus warns that a config file overrides the defaults: it should
            warnings.filterwarnings("ignore", message="Overriding default", category=UserWarning)
            if defaults_path is not None or config_file is not None:  # choice types come from the file
                return _draccus_parse(config_cls, args, defaults_path)
            return _draccus_parse(config_cls, _with_default_choices(config_cls, args), None)
    except DecodingError as error:
        prefix = ".".join(error.key_path)
        unknown = re.match(r"The fields (.*) are not valid for (\w+)", error.message)
        if unknown:  # a flag of another choice, e.g. --policy.use_vae with --policy.type=diffusion
            names = ", ".join(f"--{prefix}.{name.strip('` ')}" for name in unknown.group(1).split(","))
            raise FlagError(f"{names}: not a flag of {unknown.group(2)} (see {prog} --help)") from None
        hint = " (lists take [a,b,c])" if "list" in error.message else ""
        raise FlagError(f"--{prefix}: {error.message}{hint}") from None
    except ParsingError as error:  # a config's own checks (__post_init__) failed
        raise FlagError(str(error.__cause__ or error)) from None


def check_flag_names(config_cls: type, args: list[str], prog: str) -> None:
    """Every argument a known `--name=value` flag, and every `--X.type` one of X's registered choices."""
    valid = all_flag_names(config_cls) | {CONFIG_PATH}
    choices = choice_fields(config_cls)
    for arg in args:
        if not arg.startswith("--"):
            raise FlagError(f"unexpected argument '{arg}'; flags look like --name=value (see {prog} --help)")
        name, _, value = arg[2:].partition("=")
        if name not in valid:
            raise FlagError(f"unknown flag --{name}; {did_you_mean(name, valid, '--')}see {prog} --help")
        if name.endswith("type") and name[: -len("type")] in choices:
            known = list(choices[name[: -len("type")]].get_known_choices())
            if value not in known:
                raise FlagError(
                    f"--{name}={value}: {did_you_mean(value, known)}choose one of {', '.join(known)}"
                )


def choice_fields(config_cls: type, prefix: str = "") -> dict[str, type]:
    """Flag prefix ('policy.') -> the choice registry of every choice-typed field, nested ones included."""
    found = {}
    for field in fields(config_cls):
        field_type = typing.get_type_hints(config_cls)[field.name]
        if isinstance(field_type, type) and is_dataclass(field_type):
            if issubclass(field_type, draccus.ChoiceRegistry):
                found[f"{prefix}{field.name}."] = field_type
            else:
                found.update(choice_fields(field_type, f"{prefix}{field.name}."))
    return found


def _draccus_parse(config_cls: type, args: list[str], defaults_path: str | Path | None):
    """draccus.parse, with argparse's usage dump on a bad value turned into its one error line."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return draccus.parse(
                config_class=config_cls,
                config_path=None if defaults_path is None else str(defaults_path),
                args=args,
            )
    except SystemExit:
        lines = [line for line in captured.getvalue().splitlines() if "error:" in line]
        message = lines[-1].split("error:", 1)[1].strip() if lines else "the command line could not be parsed"
        raise FlagError(message) from None


def _check_json_file(path: str, flag: str) -> None:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise FlagError(f"{flag}={path}: cannot read it ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise FlagError(f"{flag}={path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise FlagError(f"{flag}={path}: expected a JSON object of flag values")
