"""Tiny real datasets written by policylab's own writer (no mocks), for tests across the suite."""

from pathlib import Path

import numpy as np

from policylab.datasets import LeRobotDatasetWriter

TASK = "Push the T-shaped block onto the T-shaped target."
FEATURES = {
    "observation.image": {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
}


def synthetic_episode(length: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth images (codec-friendly) and random vectors; frame t is recognisable by its values."""
    rng = np.random.default_rng(seed)
    ramp = np.arange(96, dtype=np.int64)
    images = np.empty((length, 96, 96, 3), dtype=np.uint8)
    for t in range(length):
        images[t, ..., 0] = (ramp[None, :] * 2 + 8 * t) % 256
        images[t, ..., 1] = (ramp[:, None] * 2) % 256
        images[t, ..., 2] = (40 * seed) % 256
    return {
        "observation.image": images,
        "observation.state": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "action": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "next.reward": rng.uniform(0, 1, length).astype(np.float32),
        "next.success": np.arange(length) == length - 1,
    }


def write_synthetic_dataset(root: Path, lengths=(5, 12, 8), codebase_version="v3.0") -> list[dict]:
    writer = LeRobotDatasetWriter(root, fps=10, features=FEATURES, codebase_version=codebase_version)
    episodes = [synthetic_episode(n, seed) for seed, n in enumerate(lengths)]
    for episode in episodes:
        writer.add_episode(episode, TASK)
    return episodes


# -- a recording shaped like an SO-101 pick-and-place dataset (LeRobot's arm) -------------------------------------

SO101_JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
                "gripper.pos"]  # fmt: skip
SO101_FPS = 30
SO101_TASKS = ["Pick up the red cube and place it in the bin.", "Pick up the red cube and put it in the box."]
SO101_CAMERAS = {"observation.images.front": (48, 64), "observation.images.wrist": (36, 36)}  # (H, W)
SO101_FEATURES = {
    **{key: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
       for key, (h, w) in SO101_CAMERAS.items()},
    "observation.state": {"dtype": "float32", "shape": [6], "names": SO101_JOINTS},
    "action": {"dtype": "float32", "shape": [6], "names": SO101_JOINTS},
}  # fmt: skip
HOME = np.array([0.0, -90.0, 90.0, 60.0, 0.0, 5.0])  # degrees; the gripper in % open


def so101_episode(seed: int) -> dict[str, np.ndarray]:
    """Home -> above the cube (placed by the seed) -> grasp -> lift -> over the bin -> release -> home, as joint
    targets (the action) that the state follows one frame late, and two cameras that see the cube and the arm."""
    rng = np.random.default_rng(seed)
    cube = np.array(
        [rng.uniform(-30, 30), -40 + rng.uniform(-8, 8), 60 + rng.uniform(-8, 8), 80, rng.uniform(-20, 20)]
    )
    bin_ = np.array([55.0, -60.0, 70.0, 70.0, 0.0])
    waypoints = [  # (joints 0-4, gripper % open, frames to get there)
        (HOME[:5], 5.0, 1), (cube + [0, 10, -10, 0, 0], 80.0, 12), (cube, 80.0, 8), (cube, 0.0, 6),
        (cube + [0, 20, -20, 0, 0], 0.0, 8), (bin_, 0.0, 12), (bin_, 80.0, 5), (HOME[:5], 5.0, 10),
    ]  # fmt: skip
    actions = [np.append(waypoints[0][0], waypoints[0][1])]
    for joints, grip, frames in waypoints[1:]:
        target = np.append(joints, grip)
        start = actions[-1]
        for k in range(1, frames + int(rng.integers(0, 4)) + 1):
            s = k / frames
            actions.append(
                start + (target - start) * (3 * s**2 - 2 * s**3 if s < 1 else 1.0)
            )  # smoothstep, then hold
    action = np.stack(actions).astype(np.float32)
    state = np.concatenate([action[:1], action[:-1]]) + rng.normal(0, 0.2, action.shape).astype(np.float32)
    frames = {key: np.empty((len(action), h, w, 3), np.uint8) for key, (h, w) in SO101_CAMERAS.items()}
    for t, joints in enumerate(state):
        front = frames["observation.images.front"][t]
        front[:] = (60, 60, 70)
        cx, cy = int(32 + cube[0] / 2), int(30 + cube[1] / 8)
        front[max(cy - 3, 0) : cy + 3, max(cx - 3, 0) : cx + 3] = (200, 30, 30)  # the cube
        tx, ty = int(np.clip(32 + joints[0] / 2, 0, 63)), int(np.clip(24 - joints[1] / 6, 0, 47))
        front[max(ty - 2, 0) : ty + 2, max(tx - 2, 0) : tx + 2] = (
            230,
            230,
            230,
        )  # the gripper seen from the front
        wrist = frames["observation.images.wrist"][t]
        wrist[:] = (40, 40, 40)
        opening = int(np.clip(joints[5], 0, 100) / 100 * 16)
        wrist[:, : 18 - opening], wrist[:, 18 + opening :] = (150, 150, 150), (150, 150, 150)  # the jaws
    return {**frames, "observation.state": state.astype(np.float32), "action": action}


def write_so101_dataset(root: Path, n_episodes: int = 6, codebase_version: str = "v3.0") -> Path:
    writer = LeRobotDatasetWriter(root, fps=SO101_FPS, features=SO101_FEATURES, codebase_version=codebase_version,
                                  robot_type="so101_follower")  # fmt: skip
    for seed in range(n_episodes):
        writer.add_episode(so101_episode(seed), SO101_TASKS[seed % len(SO101_TASKS)])
    return root


if __name__ == "__main__":  # python tests/synthetic.py DIR: regenerate the committed SO-101-shaped fixture
    import sys

    write_so101_dataset(Path(sys.argv[1]))
