"""Geometry, a private physics copy and collision-free routes for the PushT expert (`policylab.experts.pusht`).

Frames: a block pose is (x, y, angle) of the T's body origin, as `PushTSim.block_pose`. In the body frame the T
is the union of `TEE_BOXES` (the 120x30 bar and the 30x90 stem) with its centre of gravity at `TEE_COG`.
Geometry queries (contacts, clearances, routes) work in the body frame, where the T is two axis-aligned boxes.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import pymunk
import shapely
from gym_pusht.envs.pusht import PushTEnv
from pymunk._chipmunk import lib as _cp

from policylab.envs.pusht import AGENT_RADIUS, GOAL_POSE, WORKSPACE_SIZE

TEE_BOXES = ((-60.0, 0.0, 60.0, 30.0), (-15.0, 30.0, 15.0, 120.0))  # (x_min, y_min, x_max, y_max)
# Outline, counter-clockwise: the outward normal of the edge (a -> b) is (b - a) rotated by -90 degrees.
TEE_OUTLINE = ((-60.0, 0.0), (60.0, 0.0), (60.0, 30.0), (15.0, 30.0),
               (15.0, 120.0), (-15.0, 120.0), (-15.0, 30.0), (-60.0, 30.0))  # fmt: skip
TEE_COG = (0.0, 45.0)

# gym-pusht's control loop: a PD controller drives the kinematic agent for 10 physics substeps per step.
K_P, K_V, DT, SUBSTEPS = 100.0, 20.0, 0.01, 10
WALLS = (((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506)))


def wrap_angle(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def to_world(pose, x: float, y: float) -> tuple[float, float]:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return pose[0] + c * x - s * y, pose[1] + s * x + c * y


def to_body(pose, x: float, y: float) -> tuple[float, float]:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    dx, dy = x - pose[0], y - pose[1]
    return c * dx + s * dy, -s * dx + c * dy


def pose_error(pose, angle_scale: float, goal=GOAL_POSE) -> float:
    """Distance between the block's and the goal's centres of gravity plus `angle_scale` x |angle error|."""
    bx, by = to_world(pose, *TEE_COG)
    gx, gy = to_world(goal, *TEE_COG)
    return math.hypot(bx - gx, by - gy) + angle_scale * abs(wrap_angle(pose[2] - goal[2]))


class GoalCoverage:
    """Fraction of the goal T covered by the block at a pose: the env's success measure, computed directly."""

    def __init__(self, goal=GOAL_POSE):
        self._goal = shapely.Polygon(tee_outline_world(goal))
        shapely.prepare(self._goal)
        self._goal_area = self._goal.area

    def __call__(self, pose) -> float:
        block = shapely.Polygon(tee_outline_world(pose))
        return self._goal.intersection(block).area / self._goal_area


def tee_outline_world(pose) -> list[tuple[float, float]]:
    return [to_world(pose, x, y) for x, y in TEE_OUTLINE]


def inside_arena(pose) -> bool:
    """False once the block has been squeezed through a wall (the kinematic agent can force it through),
    from where it cannot come back. The walls' inner faces are at 7 and 504 px."""
    return all(3.0 < v < 508.0 for point in tee_outline_world(pose) for v in point)


# -- distances to the T in the body frame ----------------------------------------------------------------


def _point_box_distance(x: float, y: float, box) -> float:
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy)


def point_tee_distance(x: float, y: float) -> float:
    return min(_point_box_distance(x, y, box) for box in TEE_BOXES)


def inward_normal(pose, x: float, y: float) -> tuple[float, float]:
    """World direction from a point outside the T to the T's nearest point."""
    bx, by = to_body(pose, x, y)
    box = min(TEE_BOXES, key=lambda b: _point_box_distance(bx, by, b))
    dx, dy = min(max(bx, box[0]), box[2]) - bx, min(max(by, box[1]), box[3]) - by
    norm = max(math.hypot(dx, dy), 1e-9)
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return (c * dx - s * dy) / norm, (s * dx + c * dy) / norm


def _point_segment_distance(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    ex, ey = bx - ax, by - ay
    t = ((px - ax) * ex + (py - ay) * ey) / max(ex * ex + ey * ey, 1e-12)
    t = min(max(t, 0.0), 1.0)
    return math.hypot(px - ax - t * ex, py - ay - t * ey)


def _segment_crosses_box(ax: float, ay: float, bx: float, by: float, box) -> bool:
    """Liang-Barsky clipping: does the segment enter the box?"""
    t0, t1 = 0.0, 1.0
    for p, q in (
        (ax - bx, ax - box[0]),
        (bx - ax, box[2] - ax),
        (ay - by, ay - box[1]),
        (by - ay, box[3] - ay),
    ):
        if p == 0.0:
            if q < 0.0:
                return False
        elif p < 0.0:
            t0 = max(t0, q / p)
        else:
            t1 = min(t1, q / p)
        if t0 > t1:
            return False
    return True


def segment_clears_tee(ax: float, ay: float, bx: float, by: float, clearance: float) -> bool:
    """Whether the segment stays at least `clearance` from the T (segment-polygon distance is attained at an
    endpoint of one or a vertex of the other, unless they cross)."""
    for box in TEE_BOXES:
        if _segment_crosses_box(ax, ay, bx, by, box):
            return False
        if min(_point_box_distance(ax, ay, box), _point_box_distance(bx, by, box)) < clearance:
            return False
        for cx, cy in ((box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])):
            if _point_segment_distance(cx, cy, ax, ay, bx, by) < clearance:
                return False
    return True


def _edge_normals() -> list[tuple[float, float]]:
    normals = []
    for i, (ax, ay) in enumerate(TEE_OUTLINE):
        bx, by = TEE_OUTLINE[(i + 1) % len(TEE_OUTLINE)]
        length = math.hypot(bx - ax, by - ay)
        normals.append(((by - ay) / length, -(bx - ax) / length))
    return normals


EDGE_NORMALS = _edge_normals()


# -- contacts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """A place to push the T with outward `normal`: the agent starts a push from `precontact` (just off the
    surface) after arriving at `approach` (off the surface by the travel clearance). World coordinates."""

    normal: tuple[float, float]
    precontact: tuple[float, float]
    approach: tuple[float, float]


def sample_contacts(pose, spacing: float, phase: float, gap: float, clearance: float) -> list[Contact]:
    """Contacts every `spacing` px along each edge (starting `phase` x spacing in), keeping those whose
    pre-contact and approach points are reachable: clear of the rest of the T and inside the workspace."""
    contacts = []
    c, s = math.cos(pose[2]), math.sin(pose[2])
    for i, (ax, ay) in enumerate(TEE_OUTLINE):
        bx, by = TEE_OUTLINE[(i + 1) % len(TEE_OUTLINE)]
        nx, ny = EDGE_NORMALS[i]
        length = math.hypot(bx - ax, by - ay)
        for along in np.arange(phase * spacing, length, spacing):
            if along < 2.0 or along > length - 2.0:  # the normal is ambiguous at a corner
                continue
            px, py = ax + (bx - ax) * along / length, ay + (by - ay) * along / length
            pre = (px + nx * (AGENT_RADIUS + gap), py + ny * (AGENT_RADIUS + gap))
            app = (px + nx * (clearance + 1.0), py + ny * (clearance + 1.0))
            if point_tee_distance(*pre) < AGENT_RADIUS + gap - 1e-6 or point_tee_distance(*app) < clearance:
                continue
            app_world = to_world(pose, *app)
            if not all(0.0 <= v <= WORKSPACE_SIZE for v in app_world):
                continue
            contacts.append(Contact((c * nx - s * ny, s * nx + c * ny), to_world(pose, *pre), app_world))
    return contacts


# -- routes around the T -------------------------------------------------------------------------------------


class RoutePlanner:
    """Shortest routes from one start point to many goals that keep `clearance` from the T.

    The graph's nodes are the start, the goal and the corners of the T's outline offset outwards by the
    clearance (mitred, so edges between neighbouring corners run exactly at the clearance; clipped to the
    workspace); edges join nodes that see each other. Distances from the start are computed once (Dijkstra)
    and shared by every goal. A start inside the clearance (the agent has just pushed) is first moved out.
    """

    def __init__(self, pose, start: tuple[float, float], agent: tuple[float, float], clearance: float):
        self._pose, self._clearance = pose, clearance
        offset = clearance + 0.5  # so the ring's own edges pass the clearance test
        self._ring = []
        for i, (vx, vy) in enumerate(TEE_OUTLINE):
            (ax, ay), (bx, by) = EDGE_NORMALS[i - 1], EDGE_NORMALS[i]
            world = to_world(pose, vx + offset * (ax + bx), vy + offset * (ay + by))
            self._ring.append(to_body(pose, *np.clip(world, 0.0, WORKSPACE_SIZE)))
        self._escape = self._escape_point(to_body(pose, *start), to_body(pose, *agent))
        self._dist, self._prev = self._distances_from_start()

    def _escape_point(self, start, agent) -> tuple[float, float]:
        """Where a start inside the clearance (the agent just pushed) gets out: away from the boxes it is
        near (both of them in the T's inner corners), until clear."""
        if point_tee_distance(*start) >= self._clearance:
            return start
        x, y = agent
        dx = dy = 0.0
        for box in TEE_BOXES:
            distance = _point_box_distance(x, y, box)
            if 1e-6 < distance < self._clearance:
                dx += (x - min(max(x, box[0]), box[2])) / distance
                dy += (y - min(max(y, box[1]), box[3])) / distance
        if math.hypot(dx, dy) < 1e-6:  # the agent overlaps the T: leave away from its centre of gravity
            dx, dy = x - TEE_COG[0], y - TEE_COG[1]
        norm = max(math.hypot(dx, dy), 1e-9)
        for extra in (1.0, 5.0, 10.0, 20.0, 40.0):
            escape = x + dx / norm * (self._clearance + extra), y + dy / norm * (self._clearance + extra)
            if point_tee_distance(*escape) >= self._clearance:
                break
        return escape

    def _clear(self, a, b) -> bool:
        return segment_clears_tee(a[0], a[1], b[0], b[1], self._clearance)

    def _distances_from_start(self):
        nodes = [self._escape, *self._ring]
        dist, prev = [math.inf] * len(nodes), [-1] * len(nodes)
        dist[0] = 0.0
        queue = [(0.0, 0)]
        while queue:
            d, i = heapq.heappop(queue)
            if d > dist[i]:
                continue
            for j in range(1, len(nodes)):
                step = math.dist(nodes[i], nodes[j])
                if d + step < dist[j] and self._clear(nodes[i], nodes[j]):
                    dist[j], prev[j] = d + step, i
                    heapq.heappush(queue, (d + step, j))
        return dist, prev

    def route(self, goal_world: tuple[float, float]) -> list[tuple[float, float]] | None:
        """Waypoints (world, after the start) of the shortest route to `goal_world`; None if there is none."""
        goal = to_body(self._pose, *goal_world)
        nodes = [self._escape, *self._ring]
        best, via = math.inf, -1
        for i, node in enumerate(nodes):
            length = self._dist[i] + math.dist(node, goal)
            if length < best and self._clear(node, goal):
                best, via = length, i
        if via < 0:
            return None
        chain = []
        while via > 0:
            chain.append(nodes[via])
            via = self._prev[via]
        return [to_world(self._pose, *p) for p in (self._escape, *reversed(chain))] + [goal_world]


def resample(start, waypoints, spacing: float) -> list[np.ndarray]:
    """Points every `spacing` px along the polyline start -> waypoints, ending exactly on the last waypoint."""
    points, carried = [], 0.0
    previous = np.asarray(start, dtype=np.float64)
    for waypoint in waypoints:
        waypoint = np.asarray(waypoint, dtype=np.float64)
        length = float(np.linalg.norm(waypoint - previous))
        along = spacing - carried
        while along < length:
            points.append(previous + (waypoint - previous) * (along / length))
            along += spacing
        carried = length - (along - spacing)
        previous = waypoint
    if not points or np.linalg.norm(points[-1] - previous) > 1e-9:
        points.append(previous)
    return points


# -- private physics -----------------------------------------------------------------------------------------


class PhysicsCopy:
    """PushT's rigid bodies in a private pymunk space, built with gym-pusht's own shape constructors.

    `load` takes `PushTSim.get_physics_state()` and restores it the way `set_physics_state` does; `step`
    repeats `PushTEnv.step`'s PD arithmetic operation for operation, so a fresh copy stepped with the same
    targets reproduces the env. A copy with a history of contacts can differ in the last bits (pymunk keeps
    contact caches), which unstable pushes (e.g. head-on along the stem) amplify; the expert rolls out the
    push it is about to execute in fresh copies.

    Speed: the agent is kinematic, so contacts never change its motion and its position and velocity are
    tracked here in Python floats (with arithmetic bit-identical to pymunk's). A substep then is
    one velocity write and one engine step, made through pymunk's cffi layer (`pymunk._chipmunk.lib`)
    because pymunk's Python wrappers around those two calls cost twice the physics itself; there is no
    env around the space and no contact-counting callback either.
    """

    def __init__(self):
        self._space = pymunk.Space()
        self._space.gravity = (0, 0)
        self._space.damping = 0.0
        self._space.add(*[PushTEnv.add_segment(self._space, a, b, 2) for a, b in WALLS])
        self._agent = PushTEnv.add_circle(self._space, (256, 400), AGENT_RADIUS)
        self._block, _ = PushTEnv.add_tee(self._space, (256, 300), 0)
        self._agent_state = (256.0, 400.0, 0.0, 0.0)

    def load(self, state) -> None:
        state = [float(v) for v in state]
        self._agent.position = state[0:2]
        self._agent.velocity = state[2:4]
        self._block.angle = state[6]  # angle first: it rotates the body about its centre of gravity
        self._block.position = state[4:6]
        self._block.velocity = state[7:9]
        self._block.angular_velocity = state[9]
        self._space.reindex_shapes_for_body(self._block)
        self._space.reindex_shapes_for_body(self._agent)
        self._agent_state = tuple(state[0:4])

    def save(self) -> tuple[float, ...]:
        b = self._block
        return (*self._agent_state, *b.position, b.angle, *b.velocity, b.angular_velocity)

    def step(self, tx: float, ty: float) -> None:
        space, agent = self._space._space, self._agent._body
        set_velocity, space_step = _cp.cpBodySetVelocity, _cp.cpSpaceStep
        x, y, vx, vy = self._agent_state
        for _ in range(SUBSTEPS):
            vx += (K_P * (tx - x) + K_V * (0.0 - vx)) * DT
            vy += (K_P * (ty - y) + K_V * (0.0 - vy)) * DT
            set_velocity(agent, (vx, vy))
            space_step(space, DT)
            x += vx * DT
            y += vy * DT
        self._agent_state = (x, y, vx, vy)

    @property
    def block_pose(self) -> tuple[float, float, float]:
        x, y = self._block.position
        return x, y, self._block.angle
