"""Files written whole or not at all, and results reused only when they were made with the same settings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_path), then rename over `path`: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_json(path: Path, data, indent: int = 2) -> Path:
    """Write `data` as indented JSON, atomically."""
    return write_atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=indent) + "\n"))


def saved_with(path: Path, settings: dict) -> dict | None:
    """The JSON object at `path` if its "settings" are exactly `settings` (JSON-normalised), else None: what an
    interrupted command finished, and nothing measured under other settings."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if saved.get("settings") == json.loads(json.dumps(settings)) else None
