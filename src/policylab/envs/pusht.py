"""PushT (gym-pusht) with the rough edges of gym-pusht 0.1.8 worked around, and dataset-keyed observations.

What `PushTSim` changes in `gym_pusht.envs.pusht.PushTEnv`, without patching site-packages:

* Exact reset: `reset(options={"reset_to_state": [ax, ay, bx, by, angle]})` in gym-pusht sets the block
  position before its angle; the angle then rotates the body about its centre of gravity (offset 45 px
  from the origin) and the block ends up elsewhere. We set the angle first, then the position.
* Copying: gym-pusht binds its collision callback to the env, so neither the env nor its pymunk space can
  be deep-copied, and pymunk's own pickling restores a body's position before its centre of gravity (the
  block jumps ~45 px). `get_physics_state` / `set_physics_state` / `clone` copy the full rigid-body state
  (positions, angle, velocities) exactly, and `copy.deepcopy(env)` goes through `clone`.
* Pixels: `np.array(pygame.surfarray.pixels3d(...))` dominates a pixel step; `pygame.image.tobytes` yields
  the same bytes already in (H, W, 3) order about 3x faster.

`PushTObservation` renames the raw observation keys to the dataset's feature keys (`observation.image`,
`observation.state`, `observation.environment_state`) and casts vectors to float32.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
from gym_pusht.envs.pusht import PushTEnv  # noqa: E402
from gymnasium import spaces  # noqa: E402

from policylab.constants import OBS_ENV_STATE, OBS_IMAGE, OBS_STATE  # noqa: E402

MAX_EPISODE_STEPS = 300
SUCCESS_THRESHOLD = 0.95  # goal coverage
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # block (x, y, angle) at the goal
WORKSPACE_SIZE = 512.0
AGENT_RADIUS = 15.0

# gym-pusht's raw observation modes, plus one that carries every signal (what the recorder stores).
OBS_TYPES = ("pixels_agent_pos", "environment_state_agent_pos", "state", "pixels_environment_state_agent_pos")

# Layout of the vector returned by `get_physics_state`.
PHYSICS_STATE_FIELDS = (
    "agent_x", "agent_y", "agent_vx", "agent_vy",
    "block_x", "block_y", "block_angle", "block_vx", "block_vy", "block_angular_velocity",
)  # fmt: skip


def _count_contacts(arbiter, space, data) -> None:
    """Module-level collision callback (gym-pusht binds a method, which makes the env uncopyable)."""
    data["n_contact_points"] = data.get("n_contact_points", 0) + len(arbiter.contact_point_set.points)


class PushTSim(PushTEnv):
    """gym-pusht's PushTEnv with exact resets, exact cloning and a faster pixel path (see module doc)."""

    def __init__(self, obs_type: str = "pixels_agent_pos", **kwargs):
        raw_obs_type = "pixels_agent_pos" if obs_type == "pixels_environment_state_agent_pos" else obs_type
        super().__init__(obs_type=raw_obs_type, **kwargs)
        self._init_kwargs = dict(obs_type=obs_type, **kwargs)
        self.obs_type = obs_type
        if obs_type == "pixels_environment_state_agent_pos":
            self.observation_space = spaces.Dict(
                {**self.observation_space.spaces, "environment_state": spaces.Box(0, 512, (16,), np.float64)}
            )

    # -- contact counting through the handler's data dict instead of a bound method -------------------
    @property
    def n_contact_points(self) -> int:
        return self.collision_handeler.data.get("n_contact_points", 0)

    @n_contact_points.setter
    def n_contact_points(self, value: int) -> None:
        if hasattr(self, "collision_handeler"):
            self.collision_handeler.data["n_contact_points"] = value

    def _setup(self) -> None:
        super()._setup()
        self.collision_handeler.post_solve = _count_contacts
        self.n_contact_points = 0

    # -- exact poses ------------------------------------------------------------------------------------
    def _set_state(self, state) -> None:
        self.agent.position = list(state[:2])
        self.block.angle = float(state[4])  # angle first: it rotates about the centre of gravity
        self.block.position = list(state[2:4])
        self.space.step(self.dt)

    def get_physics_state(self) -> np.ndarray:
        """(10,) float64 rigid-body state, fields as in `PHYSICS_STATE_FIELDS`."""
        a, b = self.agent, self.block
        return np.array(
            [*a.position, *a.velocity, *b.position, b.angle, *b.velocity, b.angular_velocity],
            dtype=np.float64,
        )

    def set_physics_state(self, state: np.ndarray) -> None:
        """Restore a state from `get_physics_state` exactly (no physics step is taken)."""
        state = [float(v) for v in state]
        self.agent.position = state[0:2]
        self.agent.velocity = state[2:4]
        self.block.angle = state[6]
        self.block.position = state[4:6]
        self.block.velocity = state[7:9]
        self.block.angular_velocity = state[9]
        self.space.reindex_shapes_for_body(self.block)
        self.space.reindex_shapes_for_body(self.agent)

    def clone(self) -> PushTSim:
        """An independent env in exactly this physical state (same goal, same RNG state, same last action)."""
        twin = type(self)(**self._init_kwargs)
        twin._setup()
        twin.goal_pose = self.goal_pose.copy()
        twin.set_physics_state(self.get_physics_state())
        twin._last_action = None if self._last_action is None else np.array(self._last_action, copy=True)
        if self._np_random is not None:
            twin._np_random = np.random.Generator(type(self._np_random.bit_generator)())
            twin._np_random.bit_generator.state = self._np_random.bit_generator.state
        return twin

    def __deepcopy__(self, memo) -> PushTSim:
        return self.clone()

    # -- state for experts and metrics ------------------------------------------------------------------
    @property
    def block_pose(self) -> np.ndarray:
        """(3,) block origin x, y and angle, in the frame of `GOAL_POSE`."""
        return np.array([*self.block.position, self.block.angle], dtype=np.float64)

    @property
    def agent_position(self) -> np.ndarray:
        return np.array(self.agent.position, dtype=np.float64)

    def coverage(self) -> float:
        """Fraction of the goal area covered by the block (success above `SUCCESS_THRESHOLD`)."""
        return float(self._get_coverage())

    # -- faster pixels, identical bytes -----------------------------------------------------------------
    def _get_img(self, screen, width, height, render_action=False):
        if render_action:
            return super()._get_img(screen, width, height, render_action=True)
        img = np.frombuffer(pygame.image.tobytes(screen, "RGB"), dtype=np.uint8)
        img = img.reshape(screen.get_height(), screen.get_width(), 3)
        return cv2.resize(img, (width, height))

    def get_obs(self):
        if self.obs_type != "pixels_environment_state_agent_pos":
            return super().get_obs()
        return {
            "pixels": self._render(),
            "environment_state": self.get_keypoints(self._block_shapes).flatten(),
            "agent_pos": np.array(self.agent.position),
        }


_RAW_TO_FEATURE = {"pixels": OBS_IMAGE, "agent_pos": OBS_STATE, "environment_state": OBS_ENV_STATE}


class PushTObservation(gym.ObservationWrapper):
    """Renames raw PushT observations to dataset feature keys; images stay uint8 (H, W, 3), vectors float32."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        raw = env.observation_space
        if isinstance(raw, spaces.Dict):
            self.observation_space = spaces.Dict(
                {_RAW_TO_FEATURE[k]: _as_float32(space) for k, space in raw.spaces.items()}
            )
        else:  # "state": the 5-D [agent_x, agent_y, block_x, block_y, block_angle]
            self.observation_space = spaces.Dict({OBS_STATE: _as_float32(raw)})

    def observation(self, observation):
        if isinstance(observation, dict):
            return {
                _RAW_TO_FEATURE[k]: v if k == "pixels" else v.astype(np.float32)
                for k, v in observation.items()
            }
        return {OBS_STATE: observation.astype(np.float32)}


def _as_float32(space: spaces.Space) -> spaces.Space:
    if isinstance(space, spaces.Box) and space.dtype != np.uint8:
        return spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32
        )
    return space


def make_pusht_env(
    obs_type: str = "pixels_agent_pos",
    max_episode_steps: int = MAX_EPISODE_STEPS,
    render_mode: str = "rgb_array",
    **kwargs,
) -> gym.Env:
    """PushT at 10 Hz with a `max_episode_steps` limit and observations keyed by dataset features."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"PushT obs_type '{obs_type}' is not one of {', '.join(OBS_TYPES)}")
    env = PushTSim(obs_type=obs_type, render_mode=render_mode, **kwargs)
    return gym.wrappers.TimeLimit(PushTObservation(env), max_episode_steps=max_episode_steps)
