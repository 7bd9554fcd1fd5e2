"""Scripted PushT expert that records demonstrations by planning pushes in a private copy of the physics.

The expert reads the simulator's true state (privileged) but never steps or changes the real simulator.
Whenever its queue of targets runs out it plans again from the current state:

1. Candidates. Relocations: contacts every `contact_spacing` px along the T's outline, each reached by the
   shortest route to its approach point that keeps the agent radius + `clearance_margin` away from the T
   (a visibility graph over the outline offset by that clearance, so travelling does not bump the block),
   then pushed from just off the surface in a few directions around the inward normal, for a few lengths.
   Continuations, when the agent touches the block: pushes straight on from there, with no travel.
2. Rollouts. Every candidate is simulated in a `PhysicsCopy`, route included (the agent arrives lagging its
   target, as it will), then `settle_steps` holding the last target; pushes that differ only in length share
   their common prefix. Far from the goal (pose error above `fine_error`) a rollout's cost is the change of
   a cheap pose error (centre-of-gravity distance + `angle_scale` x angle error) per step, travel included:
   the fastest progress wins. Near the goal it is the goal coverage lost (the env's success measure) plus
   `fine_step_cost` per step, and short slow pushes join the search. Reaching success beats everything,
   sooner better; squeezing the block through a wall (the kinematic agent can) rules a candidate out.
3. Execution. A continuation is executed at once. For a relocation the route is executed first; on arrival
   the push is refined: variants of its direction and length are rolled out from the real state, each in a
   fresh copy (which reproduces the env step for step), and the best one is executed.

Actions are absolute targets for gym-pusht's PD-controlled agent; they move along paths at a bounded speed
(`travel_speed`, `push_speed`, `fine_push_speed` px per 10 Hz step) rather than jumping, which keeps the
action stream smooth. With `diversity` > 0 the expert randomises contact sampling, speeds and push lengths
and draws among near-best pushes, so demonstrations from one start differ (multi-modal) yet stay efficient.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from policylab.envs.pusht import SUCCESS_THRESHOLD, WORKSPACE_SIZE, PushTSim
from policylab.experts.pusht_planning import (
    AGENT_RADIUS,
    GoalCoverage,
    PhysicsCopy,
    RoutePlanner,
    inside_arena,
    inward_normal,
    point_tee_distance,
    pose_error,
    resample,
    sample_contacts,
    to_body,
)

Target = tuple[float, float]
Score = Callable[[tuple[float, float, float], int, int | None], float]  # (pose after, steps, success step)
SUCCESS_COST = -1000.0  # any rollout that reaches success beats every rollout that does not
# Rollouts skip the coverage polygon intersection where success is impossible: every pose with coverage
# above 0.95 has a pose error (angle scale 60 px/rad) below 4.2 px (sampled densely around the goal).
SUCCESS_ERROR_BOUND, SUCCESS_ERROR_ANGLE_SCALE = 8.0, 60.0


@dataclass
class PushTExpertConfig:
    """Knobs of `PushTExpert`. Distances in px, speeds in px of target motion per 10 Hz step.

    diversity: 0 = deterministic best pushes; > 0 randomises contact sampling, speeds and push lengths, and
        draws the push among those whose cost is within diversity x choice_tolerance x |best cost| of the best.
    choice_tolerance: see diversity.
    speed_jitter, length_jitter: with diversity 1, speeds and push lengths are scaled by a factor drawn
        uniformly from 1 +- these (per plan; scaled down with smaller diversity).
    travel_speed: target speed while travelling around the block.
    push_speed, push_lengths: speed and lengths (target travel past the pre-contact point) of coarse pushes.
    fine_push_speed, fine_push_lengths: the same for the short pushes of the fine phase.
    push_angles_deg: push directions rolled out at a new contact, relative to its inward normal.
    continue_angles_deg: push directions rolled out from the current contact, relative to its inward normal.
    fine_error: pose error below which pushes are scored by goal coverage and fine pushes join the search
        (pose error, not coverage, decides: a T turned the wrong way can still cover much of the goal).
    contact_spacing: distance between candidate contacts along the T's outline.
    contact_gap: gap between agent and block where a push starts.
    clearance_margin: clearance kept from the block while travelling, beyond the agent radius.
    angle_scale: px of pose error per radian of angle error.
    fine_step_cost: coverage % a step must be worth in the fine phase.
    settle_steps: steps a rollout goes on holding the last target before it is scored (the agent lags its
        target, so the block keeps moving for a moment).
    refine_angles_deg, refine_length_scales: variants of the chosen push rolled out on arrival.
    """

    diversity: float = 1.0
    choice_tolerance: float = 0.15
    speed_jitter: float = 0.2
    length_jitter: float = 0.2
    travel_speed: float = 15.0
    push_speed: float = 7.0
    push_lengths: tuple[float, ...] = (15.0, 35.0, 60.0, 90.0)
    fine_push_speed: float = 3.0
    fine_push_lengths: tuple[float, ...] = (4.0, 8.0, 13.0, 20.0)
    push_angles_deg: tuple[float, ...] = (-25.0, 0.0, 25.0)
    continue_angles_deg: tuple[float, ...] = (-50.0, -25.0, 0.0, 25.0, 50.0)
    fine_error: float = 20.0
    contact_spacing: float = 15.0
    contact_gap: float = 2.0
    clearance_margin: float = 6.0
    angle_scale: float = 60.0
    fine_step_cost: float = 0.3
    settle_steps: int = 2
    refine_angles_deg: tuple[float, ...] = (-8.0, 0.0, 8.0)
    refine_length_scales: tuple[float, ...] = (0.7, 0.85, 1.0, 1.15, 1.3)


@dataclass(frozen=True)
class Push:
    """A straight push: the target moves from where it is to `start`, then `length` px along `direction`,
    at `speed` px per step. `after_travel`: from a new contact, reached by a route and refined on arrival;
    otherwise straight on from the current contact."""

    start: tuple[float, float]
    direction: tuple[float, float]
    length: float
    speed: float
    after_travel: bool

    def varied(self, angle: float, length_scale: float) -> Push:
        return replace(self, direction=rotated(self.direction, angle), length=self.length * length_scale)


class Candidate(NamedTuple):
    cost: float
    push: Push
    route: list[Target]  # travel before the push (empty for a continuation)


def commandable(x: float, y: float) -> Target:
    """The target as the env receives it: clipped to the workspace and rounded to float32."""
    return (
        float(np.float32(min(max(x, 0.0), WORKSPACE_SIZE))),
        float(np.float32(min(max(y, 0.0), WORKSPACE_SIZE))),
    )


def rotated(vector: tuple[float, float], angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]


class PushTExpert:
    """Privileged PushT expert (see the module docstring). Call `reset(sim)` after `env.reset`, then
    `act(sim)` every step; `sim` is the unwrapped `PushTSim`, which the expert only reads."""

    def __init__(self, config: PushTExpertConfig | None = None, seed: int | None = None):
        self.config = config if config is not None else PushTExpertConfig()
        self._rng = np.random.default_rng(seed)
        self._coverage = GoalCoverage()
        self._world = PhysicsCopy()
        self._targets: deque[Target] = deque()
        self._pending: Push | None = None  # chosen push, refined once the agent reaches its approach point
        self._last_target: Target | None = None

    def reset(self, sim: PushTSim) -> None:
        self._world = PhysicsCopy()  # no contact history from a previous episode
        self._targets.clear()
        self._pending = None
        self._last_target = None

    def act(self, sim: PushTSim) -> np.ndarray:
        if not self._targets:
            self._targets.extend(self._plan(sim.get_physics_state()))
        self._last_target = self._targets.popleft()
        return np.array(self._last_target, dtype=np.float32)

    # -- planning -------------------------------------------------------------------------------------------

    def _plan(self, state: np.ndarray) -> list[Target]:
        start = self._last_target or commandable(state[0], state[1])
        if self._pending is not None:
            push, self._pending = self._pending, None
            return self._refine(state, start, push)
        candidates = self._continuations(state, start) + self._relocations(state, start)
        if not candidates:  # nowhere reachable to push from: hold still
            return [start]
        _, push, route = candidates[self._pick([candidate.cost for candidate in candidates])]
        if not push.after_travel:
            return self._push_targets(start, push)
        self._pending = push
        return route

    def _families(self, fine: bool) -> list[tuple[float, list[float]]]:
        """(speed, lengths) of the pushes to roll out, randomised with diversity."""
        cfg, jitter = self.config, self._jitter
        families = [(cfg.push_speed, cfg.push_lengths)]
        if fine:
            families.append((cfg.fine_push_speed, cfg.fine_push_lengths))
        return [
            (speed * jitter(cfg.speed_jitter), [length * jitter(cfg.length_jitter) for length in lengths])
            for speed, lengths in families
        ]

    def _continuations(self, state: np.ndarray, start: Target) -> list[Candidate]:
        """Pushes straight on from where the agent touches the block: no travel."""
        cfg, pose = self.config, state[4:7]
        if point_tee_distance(*to_body(pose, state[0], state[1])) > AGENT_RADIUS + cfg.contact_gap:
            return []
        fine = self._is_fine(pose)
        inward, score = inward_normal(pose, state[0], state[1]), self._scorer(pose, fine, 0.0)
        candidates = []
        for speed, lengths in self._families(fine):
            for angle in np.radians(cfg.continue_angles_deg):
                pushes = [Push(start, rotated(inward, angle), length, speed, False) for length in lengths]
                sequences = [self._push_targets(start, push) for push in pushes]
                costs = self._rollout_costs(self._world, state, sequences, score)
                candidates += [Candidate(cost, push, []) for cost, push in zip(costs, pushes, strict=True)]
        return candidates

    def _relocations(self, state: np.ndarray, start: Target) -> list[Candidate]:
        """Pushes from contacts along the outline, each after travelling there around the block."""
        cfg, pose = self.config, state[4:7]
        fine = self._is_fine(pose)
        travel_speed = cfg.travel_speed * self._jitter(cfg.speed_jitter)
        clearance = AGENT_RADIUS + cfg.clearance_margin
        phase = 0.5 * self._jitter(1.0)  # where along each edge the contacts start, in units of the spacing
        planner = RoutePlanner(pose, start, (state[0], state[1]), clearance)
        families = self._families(fine)
        candidates = []
        for contact in sample_contacts(pose, cfg.contact_spacing, phase, cfg.contact_gap, clearance):
            waypoints = planner.route(contact.approach)
            if waypoints is None:
                continue
            route = [commandable(*p) for p in resample(start, waypoints, travel_speed)]
            score = self._scorer(pose, fine, len(route))
            probe = self._arrival(state, route)
            for speed, lengths in families:
                for angle in np.radians(cfg.push_angles_deg):
                    direction = rotated((-contact.normal[0], -contact.normal[1]), angle)
                    pushes = [Push(contact.precontact, direction, length, speed, True) for length in lengths]
                    sequences = [self._push_targets(contact.approach, push) for push in pushes]
                    costs = self._rollout_costs(self._world, probe, sequences, score)
                    candidates += [Candidate(c, push, route) for c, push in zip(costs, pushes, strict=True)]
        return candidates

    def _arrival(self, state: np.ndarray, route: list[Target]) -> tuple[float, ...]:
        """The state after travelling `route`: the agent arrives lagging its target, and a route that cuts a
        corner close to the block may nudge it."""
        self._world.load(state)
        for target in route:
            self._world.step(*target)
        return self._world.save()

    def _refine(self, state: np.ndarray, start: Target, push: Push) -> list[Target]:
        """Variants of `push` rolled out from the real state (the agent arriving, still lagging its target),
        each in a fresh copy so that the rollout reproduces the env; returns the best variant's targets."""
        cfg = self.config
        score = self._scorer(state[4:7], self._is_fine(state[4:7]), 0.0)
        best_cost, best_targets = math.inf, [start]
        for angle in np.radians(cfg.refine_angles_deg):
            for scale in cfg.refine_length_scales:
                targets = self._push_targets(start, push.varied(float(angle), scale))
                (cost,) = self._rollout_costs(PhysicsCopy(), state, [targets], score)
                if cost < best_cost:
                    best_cost, best_targets = cost, targets
        return best_targets

    def _push_targets(self, start: Target, push: Push) -> list[Target]:
        """Targets every `speed` px from `start` to `push.start`, then `length` along the push direction.
        Pushes that differ only in length share their prefix exactly (rollouts reuse it)."""
        (sx, sy), (px, py) = start, push.start
        (dx, dy), speed = push.direction, push.speed
        lead = math.hypot(px - sx, py - sy)
        total = lead + push.length

        def point_at(s: float) -> tuple[float, float]:
            if s < lead:
                return sx + (px - sx) * s / lead, sy + (py - sy) * s / lead
            return px + dx * (s - lead), py + dy * (s - lead)

        steps = max(math.ceil(total / speed - 1e-9), 1)
        return [commandable(*point_at(min(k * speed, total))) for k in range(1, steps + 1)]

    def _is_fine(self, pose) -> bool:
        return pose_error(pose, self.config.angle_scale) < self.config.fine_error

    # -- rollouts and scoring -----------------------------------------------------------------------------

    def _rollout_costs(
        self, world: PhysicsCopy, state, sequences: list[list[Target]], score: Score
    ) -> list[float]:
        """Cost of each target sequence rolled out in `world` from `state`, then `settle_steps` holding its last
        target. A sequence resumes from the saved state at the end of its common prefix with the previous one."""
        costs = []
        saved, successes, previous = [tuple(state)], [None], []
        for sequence in sequences:
            shared = 0
            while shared < min(len(previous), len(sequence)) and previous[shared] == sequence[shared]:
                shared += 1
            del saved[shared + 1 :], successes[shared + 1 :]
            world.load(saved[-1])
            for index in range(shared, len(sequence)):
                world.step(*sequence[index])
                saved.append(world.save())
                successes.append(successes[-1] or (index + 1 if self._succeeded(world.block_pose) else None))
            success = successes[-1]
            for index in range(len(sequence), len(sequence) + self.config.settle_steps):
                world.step(*sequence[-1])
                success = success or (index + 1 if self._succeeded(world.block_pose) else None)
            costs.append(score(world.block_pose, len(sequence), success))
            previous = sequence
        return costs

    def _succeeded(self, pose) -> bool:
        return (
            pose_error(pose, SUCCESS_ERROR_ANGLE_SCALE) < SUCCESS_ERROR_BOUND
            and self._coverage(pose) > SUCCESS_THRESHOLD
        )

    def _scorer(self, pose, fine: bool, extra_steps: float) -> Score:
        """Cost of a rollout's outcome (lower is better), for pushes from `pose` after `extra_steps` of travel.

        Coarse: pose-error change per step, so pushes are ranked by progress per step. Fine: coverage lost
        (%) plus `fine_step_cost` per step. A rollout that succeeds beats all others, an earlier one more."""
        cfg = self.config
        error_now = pose_error(pose, cfg.angle_scale)

        def score(pose_after, steps: int, success_step: int | None) -> float:
            if not inside_arena(pose_after):
                return math.inf
            if success_step is not None:
                return SUCCESS_COST + extra_steps + success_step
            if fine:
                return 100.0 * (1.0 - self._coverage(pose_after)) + cfg.fine_step_cost * (extra_steps + steps)
            return (pose_error(pose_after, cfg.angle_scale) - error_now) / (extra_steps + steps)

        return score

    def _pick(self, costs: list[float]) -> int:
        """The cheapest push, or with diversity one drawn uniformly from those within a fraction of it."""
        costs = np.asarray(costs)
        best = int(np.argmin(costs))
        tolerance = self.config.diversity * self.config.choice_tolerance * abs(costs[best])
        if tolerance <= 0:
            return best
        return int(self._rng.choice(np.flatnonzero(costs <= costs[best] + tolerance)))

    def _jitter(self, spread: float) -> float:
        """A multiplicative factor in [1 - spread, 1 + spread] x diversity (1 when diversity is 0)."""
        if self.config.diversity <= 0:
            return 1.0
        return 1.0 + spread * min(self.config.diversity, 1.0) * (2.0 * self._rng.random() - 1.0)
