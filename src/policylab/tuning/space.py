"""Search spaces: `{"flag.name": spec}` in JSON, checked up front, sampled by an Optuna trial.

A spec is a list of choices (categorical; a choice may itself be a list, e.g. down_dims) or a range
`{"low": L, "high": H}` with optional `"log": true` and `"step": S`: integers when L and H are both JSON
integers, else floats.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from policylab.errors import ConfigError

# Published tuning advice (ACT paper / LeRobot tutorials; Diffusion Policy paper), sized for the CPU presets.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "act": {
        "training.lr": {"low": 1e-5, "high": 1e-3, "log": True},
        "policy.kl_weight": {"low": 1.0, "high": 100.0, "log": True},
        "policy.chunk_size": [20, 50, 100],
        "policy.dim_model": [64, 128, 256],
    },
    "diffusion": {
        "training.lr": {"low": 3e-5, "high": 1e-3, "log": True},
        "policy.down_dims": [[32, 64, 128], [64, 128, 256], [128, 256, 512]],
        "policy.horizon": [16, 32],
        "policy.n_action_steps": [4, 8],
        "policy.num_inference_steps": [5, 10, 20],
    },
}


def parse_space(text: str | None, policy_type: str) -> dict[str, Any]:
    """The search space from `--tune.space` (JSON), or the policy's default; raises naming the bad parameter."""
    if text is None:
        if policy_type not in DEFAULT_SPACES:
            raise ConfigError(
                f"--tune.space: no default search space for policy type '{policy_type}'; give one"
            )
        return DEFAULT_SPACES[policy_type]
    try:
        space = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--tune.space is not valid JSON ({error}): {text}") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            '--tune.space must be a non-empty JSON object, e.g. {"training.lr": {"low": 1e-5, "high": 1e-3}}'
        )
    for name, spec in space.items():
        check_spec(name, spec)
    return space


def check_spec(name: str, spec: Any) -> None:
    where = f"--tune.space: parameter '{name}'"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where} has an empty list of choices")
        return
    if not isinstance(spec, dict):
        raise ConfigError(
            f'{where}: expected a list of choices or {{"low": L, "high": H}}, got {json.dumps(spec)}'
        )
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; a range takes low, high, log, step")
    if not {"low", "high"} <= set(spec):
        raise ConfigError(f"{where}: a range needs both low and high, got {json.dumps(spec)}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must be numbers, got {json.dumps(spec)}")
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if spec.get("log") and "step" in spec:
        raise ConfigError(f"{where}: a range is either log or stepped, not both")


def representative_values(space: dict[str, Any]) -> dict[str, Any]:
    """One value per parameter (first choice, low end) to check every name against the train flags."""
    return {name: spec[0] if isinstance(spec, list) else spec["low"] for name, spec in space.items()}


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Sample every parameter of `space` for `trial`."""
    values = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            encoded = [
                json.dumps(c) if isinstance(c, (list, dict)) else c for c in spec
            ]  # Optuna takes scalars
            choice = trial.suggest_categorical(name, encoded)
            values[name] = decode_choice(choice)
        elif is_integer_range(spec):
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1),
                                             log=spec.get("log", False))  # fmt: skip
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"),
                                               log=spec.get("log", False))  # fmt: skip
    return values


def decode_choice(value: Any) -> Any:
    """A parameter as Optuna stores it, back as the flag's value (list and dict choices are JSON strings)."""
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def is_integer_range(spec: dict) -> bool:
    return all(isinstance(spec[k], int) for k in ("low", "high")) and isinstance(spec.get("step", 1), int)


def grid(space: dict[str, Any]) -> dict[str, list]:
    """The search space as Optuna's GridSampler wants it: every parameter a list of choices."""
    ranges = [name for name, spec in space.items() if not isinstance(spec, list)]
    if ranges:
        raise ConfigError(
            f"--tune.sampler=grid needs a list of choices for every parameter; ranges: {ranges}"
        )
    return {
        name: [json.dumps(c) if isinstance(c, (list, dict)) else c for c in spec]
        for name, spec in space.items()
    }


def as_flag(name: str, value: Any) -> str:
    """`--name=value` as `policylab train` reads it."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return f"--{name}={text}"
