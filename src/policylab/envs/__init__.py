"""Env factory: simulators behind one call, observations keyed by the dataset's feature names."""

from __future__ import annotations

from dataclasses import asdict

import gymnasium as gym

from policylab.envs.configs import EnvConfig, PushTEnvConfig

# Names a user may pass for PushT: ours, gym-pusht's gymnasium id, and the dataset id tutorials use.
_ALIASES = {"pusht": "pusht", "gym_pusht/PushT-v0": "pusht", "lerobot/pusht": "pusht"}


def make_env(env: str | EnvConfig = "pusht", **kwargs) -> gym.Env:
    """Build an env by name (`"pusht"`, `"gym_pusht/PushT-v0"`, `"lerobot/pusht"`) or from an `EnvConfig`.

    Keyword arguments override the config's fields, e.g. `make_env("pusht", obs_type="pixels_agent_pos")`.
    """
    if isinstance(env, str):
        if env not in _ALIASES:
            raise ValueError(f"unknown env '{env}'; known: {', '.join(_ALIASES)}")
        env = PushTEnvConfig()
    if isinstance(env, PushTEnvConfig):
        from policylab.envs.pusht import make_pusht_env

        return make_pusht_env(**{**asdict(env), **kwargs})
    raise ValueError(f"no env factory for config type {type(env).__name__}")


__all__ = ["EnvConfig", "PushTEnvConfig", "make_env"]
