"""Env configurations: one dataclass per env type, chosen on the command line with `--env.type=...`."""

from __future__ import annotations

from dataclasses import dataclass

import draccus


@dataclass
class EnvConfig(draccus.ChoiceRegistry):
    """Base of every env config; `--env.type` picks the registered subclass."""

    @property
    def type(self) -> str:
        return self.get_choice_name(self.__class__)


@EnvConfig.register_subclass("pusht")
@dataclass
class PushTEnvConfig(EnvConfig):
    """PushT (gym-pusht, 10 Hz).

    obs_type: pixels_agent_pos (96x96 RGB + agent xy), environment_state_agent_pos (16-D T keypoints +
        agent xy), state (5-D agent xy, block xy, block angle), or pixels_environment_state_agent_pos (all).
    max_episode_steps: step limit of an episode (300 in the PushT benchmark).
    observation_width, observation_height: size of the observed image.
    """

    obs_type: str = "pixels_environment_state_agent_pos"
    max_episode_steps: int = 300
    observation_width: int = 96
    observation_height: int = 96

    @property
    def fps(self) -> int:
        return 10
