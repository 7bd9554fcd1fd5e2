"""What policylab writes has the layout LeRobot writes, checked against datasets LeRobot itself wrote (the
committed fixtures of tests/fixtures/lerobot_written), so the check runs without LeRobot installed: the same
meta/info.json fields and feature specs, the same files, and the same parquet schemas (arrow types and the
Hugging Face feature metadata LeRobot's loader reads). Known, intended differences: policylab writes one data
and video file per episode in v3.0 (LeRobot packs several; both are valid v3.0), and LeRobot 0.6 adds its
encoder settings to a video feature's `info`."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from policylab.datasets import LeRobotDatasetWriter

pytestmark = pytest.mark.interop
FIXTURES = Path(__file__).parents[1] / "fixtures/lerobot_written"
TASK = "Push the T-shaped block onto the T-shaped target."
MOTORS = {"motors": ["motor_0", "motor_1"]}
FEATURES = {  # as tests/fixtures/lerobot_written/make_fixtures.py gives them to LeRobot
    "observation.image": {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [2], "names": MOTORS},
    "observation.environment_state": {"dtype": "float32", "shape": [16], "names": None},
    "action": {"dtype": "float32", "shape": [2], "names": MOTORS},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
}
LENGTHS = [5, 12, 8]  # the fixtures' episodes
# LeRobot 0.6 also records its encoder settings
LEROBOT_06_ENCODER_INFO = {"video.g", "video.crf", "video.preset", "video.fast_decode", "video.video_backend",
                           "video.extra_options"}  # fmt: skip


def write_ours(root: Path, version: str) -> Path:
    writer = LeRobotDatasetWriter(root, 10, FEATURES, codebase_version=version, robot_type="2d pointer")
    rng = np.random.default_rng(0)
    for n in LENGTHS:
        episode = {key: rng.random((n, *spec["shape"])).astype(np.float32) for key, spec in FEATURES.items()}
        episode["observation.image"] = np.zeros((n, 96, 96, 3), np.uint8)
        episode["next.reward"], episode["next.success"] = (
            rng.random(n).astype(np.float32),
            np.arange(n) == n - 1,
        )
        writer.add_episode(episode, TASK)
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}


def schema(path: Path) -> tuple[dict, dict | None]:
    """Column name -> arrow type, and the Hugging Face feature metadata (without its per-file fingerprint)."""
    arrow = pq.read_schema(path)
    hf = (
        json.loads(arrow.metadata[b"huggingface"])
        if arrow.metadata and b"huggingface" in arrow.metadata
        else None
    )
    if hf is not None:
        hf.pop("fingerprint", None)
    return {field.name: str(field.type) for field in arrow}, hf


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_info_json_matches_lerobots(tmp_path, version):
    ours = json.loads((write_ours(tmp_path / "ours", version) / "meta/info.json").read_text())
    theirs = json.loads((FIXTURES / version.replace(".", "") / "meta/info.json").read_text())
    assert set(ours) == set(theirs)
    assert {k: v for k, v in ours.items() if k != "features"} == {
        k: v for k, v in theirs.items() if k != "features"
    }
    for key, spec in theirs["features"].items():
        mine = dict(ours["features"][key])
        if "info" in spec:
            assert mine.pop("info") == {
                k: v for k, v in spec["info"].items() if k not in LEROBOT_06_ENCODER_INFO
            }
            spec = {k: v for k, v in spec.items() if k != "info"}
        assert mine == spec, key


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_files_and_parquet_schemas_match_lerobots(tmp_path, version):
    ours = write_ours(tmp_path / "ours", version)
    theirs = FIXTURES / version.replace(".", "")
    if version == "v3.0":  # one data and video file per episode; LeRobot packs all three into file-000
        packed = {f"data/chunk-000/file-00{i}.parquet" for i in (1, 2)}
        packed |= {f"videos/observation.image/chunk-000/file-00{i}.mp4" for i in (1, 2)}
        assert files(ours) - packed == files(theirs)
    else:  # policylab also writes meta/stats.json (LeRobot 0.3 aggregates episodes_stats.jsonl instead)
        assert files(ours) - {"meta/stats.json"} == files(theirs)
    for name in sorted(files(theirs)):
        if name.endswith(".parquet"):
            assert schema(ours / name) == schema(theirs / name), name
