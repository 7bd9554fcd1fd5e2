"""The errors caused by user input (a flag, a file, a dataset, a checkpoint), and the hint they share.

The command line prints every `PolicylabError` as one line, `policylab <command>: error: <message>`, and
exits with its `exit_status`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PolicylabError(Exception):
    """A problem with what the user gave policylab, explained in the message."""

    exit_status = 1


class ConfigError(PolicylabError, ValueError):
    """A flag value that parses but cannot work; the message names the flag and what it accepts."""

    exit_status = 2


class FlagError(ConfigError):
    """A command line that cannot be parsed (an unknown flag, a value of the wrong type)."""

    @property
    def message(self) -> str:
        return str(self)


def did_you_mean(name: str, options: Iterable[str], prefix: str = "", n: int = 3) -> str:
    """'did you mean --a, --b? ' for the options closest to `name` (each shown with `prefix`), or ''."""
    close = difflib.get_close_matches(name, sorted(options), n=n, cutoff=0.6)
    return f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
