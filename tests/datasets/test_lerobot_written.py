"""policylab reads datasets that real LeRobot wrote (fixtures made by tests/fixtures/lerobot_written/make_fixtures.py;
v21_converted_to_v30 is v21 run through LeRobot 0.6.1's `lerobot.scripts.convert_dataset_v21_to_v30`, the way
most v3.0 datasets on the hub were made)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from policylab.datasets import LeRobotDataset

pytestmark = pytest.mark.interop

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lerobot_written"
LENGTHS = [5, 12, 8]


def expected_image(frame_index: int) -> np.ndarray:
    """The pattern make_fixtures.py draws in channels 0 and 1 (channel 2 is random per frame), (C, H, W)."""
    ramp = np.arange(96)
    image = np.zeros((2, 96, 96))
    image[0] = (ramp[None, :] * 2 + frame_index * 10) % 256
    image[1] = (ramp[:, None] * 2) % 256
    return image / 255.0


@pytest.fixture(params=["v30", "v21", "v30_img", "v21_img", "v21_converted_to_v30"])
def lerobot_dataset_root(request, tmp_path):
    root = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, root)  # the frame cache goes next to the copy
    return root


def test_reads_lerobot_written_dataset(lerobot_dataset_root):
    ds = LeRobotDataset(root=lerobot_dataset_root, delta_timestamps={"action": [-0.1, 0.0, 0.1]})
    assert ds.meta.codebase_version == (
        "v3.0"
        if lerobot_dataset_root.name.startswith("v30") or "to_v30" in lerobot_dataset_root.name
        else "v2.1"
    )
    assert [e.length for e in ds.episodes] == LENGTHS and len(ds) == sum(LENGTHS)
    parquet_actions = np.concatenate(
        [
            np.stack(pq.read_table(lerobot_dataset_root / e.data_file).column("action").to_pylist())
            for e in ds.episodes
        ]
        if ds.meta.codebase_version == "v2.1"
        else [
            np.stack(
                pq.read_table(lerobot_dataset_root / ds.episodes[0].data_file).column("action").to_pylist()
            )
        ]
    )
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(item["action"][1].numpy(), parquet_actions[i])
        frame_index = int(item["frame_index"])
        # per channel: a frame off by one shifts channel 0 by 10/255, above the codec's ~3.5/255
        error = np.abs(item["observation.image"][:2].numpy() - expected_image(frame_index)).mean(axis=(1, 2))
        assert error.max() < (1e-6 if lerobot_dataset_root.name.endswith("_img") else 6 / 255)
    last = ds[LENGTHS[0] - 1]
    assert last["action_is_pad"].tolist() == [False, False, True]
    assert ds.meta.stats["observation.image"]["mean"].shape == (3, 1, 1)


def test_appending_to_a_lerobot_packed_dataset_keeps_its_episodes(tmp_path):
    from policylab.datasets import LeRobotDatasetWriter

    root = tmp_path / "v30"
    shutil.copytree(FIXTURES / "v30", root)  # LeRobot packed all 3 episodes into one data and one video file
    before = LeRobotDataset(root=root)
    old_actions = np.stack([before[i]["action"].numpy() for i in range(len(before))])
    writer = LeRobotDatasetWriter(root, fps=10, features=_lerobot_fixture_features("v30"))
    writer.add_episode(fixture_like_episode(4), "another task")
    after = LeRobotDataset(root=root)
    assert [e.length for e in after.episodes] == [*LENGTHS, 4]
    assert after.episodes[1].data_file == before.episodes[1].data_file  # still the packed file
    np.testing.assert_array_equal(
        np.stack([after[i]["action"].numpy() for i in range(len(before))]), old_actions
    )
    assert after.meta.tasks == ["Push the T-shaped block onto the T-shaped target.", "another task"]


def fixture_like_episode(length: int) -> dict[str, np.ndarray]:
    """Random frames with the features of the LeRobot fixtures."""
    rng = np.random.default_rng(0)
    return {
        "observation.image": rng.integers(0, 255, (length, 96, 96, 3), dtype=np.uint8),
        "observation.state": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "observation.environment_state": rng.uniform(0, 512, (length, 16)).astype(np.float32),
        "action": rng.uniform(0, 512, (length, 2)).astype(np.float32),
        "next.reward": np.zeros(length, np.float32),
        "next.success": np.zeros(length, bool),
    }


def _lerobot_fixture_features(version: str) -> dict:
    info = json.loads((FIXTURES / version / "meta/info.json").read_text())
    bookkeeping = ("timestamp", "frame_index", "episode_index", "index", "task_index")
    return {k: {**v, "shape": list(v["shape"])} for k, v in info["features"].items() if k not in bookkeeping}


@pytest.mark.parametrize("version,codebase_version", [("v30", "v3.0"), ("v21", "v2.1")])
def test_written_layout_matches_lerobot(tmp_path, version, codebase_version):
    """What LeRobot's loader relies on, compared with files LeRobot wrote (runs without LeRobot installed)."""
    from policylab.datasets import LeRobotDatasetWriter

    theirs, ours = FIXTURES / version, tmp_path / version
    writer = LeRobotDatasetWriter(
        ours, fps=10, features=_lerobot_fixture_features(version), codebase_version=codebase_version
    )
    writer.add_episode(fixture_like_episode(3), "Push the T-shaped block onto the T-shaped target.")
    their_info, our_info = (json.loads((d / "meta/info.json").read_text()) for d in (theirs, ours))
    assert set(their_info) <= set(our_info) | {"robot_type"}
    assert {k: (v["dtype"], list(v["shape"])) for k, v in their_info["features"].items()} == {
        k: (v["dtype"], list(v["shape"])) for k, v in our_info["features"].items()
    }
    assert (their_info["data_path"], their_info["video_path"]) == (
        our_info["data_path"],
        our_info["video_path"],
    )

    data_file = (
        "data/chunk-000/file-000.parquet" if version == "v30" else "data/chunk-000/episode_000000.parquet"
    )
    their_schema, our_schema = (pq.read_schema(d / data_file) for d in (theirs, ours))
    assert {f.name: f.type for f in their_schema} == {f.name: f.type for f in our_schema}
    their_hf, our_hf = (
        json.loads(s.metadata[b"huggingface"])["info"]["features"] for s in (their_schema, our_schema)
    )
    assert their_hf == our_hf  # LeRobot 0.3.2 cannot read "List"; v2.1 must say "Sequence"

    if version == "v30":
        episodes = "meta/episodes/chunk-000/file-000.parquet"
        assert set(pq.read_schema(theirs / episodes).names) <= set(pq.read_schema(ours / episodes).names)
        their_tasks, our_tasks = (
            json.loads(pq.read_schema(d / "meta/tasks.parquet").metadata[b"pandas"]) for d in (theirs, ours)
        )
        assert their_tasks["index_columns"] == our_tasks["index_columns"] == ["task"]
    else:
        for name in ("episodes.jsonl", "tasks.jsonl", "episodes_stats.jsonl"):
            their_row, our_row = (
                json.loads((d / "meta" / name).read_text().splitlines()[0]) for d in (theirs, ours)
            )
            assert set(their_row) == set(our_row)
        their_stats, our_stats = (
            json.loads((d / "meta/episodes_stats.jsonl").read_text().splitlines()[0])["stats"]
            for d in (theirs, ours)
        )
        assert set(their_stats) == set(our_stats)
        assert all(set(their_stats[k]) <= set(our_stats[k]) for k in their_stats)  # ours adds quantiles
