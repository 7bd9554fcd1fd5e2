"""Real LeRobot loads datasets policylab wrote. Needs LeRobot in a side venv, so it runs only when pointed at one:

LEROBOT_V30_PYTHON=/path/to/lerobot-0.6-venv/bin/python   (reads v3.0; Python 3.12, pip install "lerobot[dataset,training,diffusion]==0.6.1"; apt-get install ffmpeg)
LEROBOT_V21_PYTHON=/path/to/lerobot-0.3.2-venv/bin/python (reads v2.1; Python 3.11, "lerobot[pusht]==0.3.2" "numpy<2.3")
"""

import json
import os
import subprocess

import numpy as np
import pytest

from synthetic import write_synthetic_dataset

pytestmark = pytest.mark.interop

READ_WITH_LEROBOT = """
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from lerobot.datasets.lerobot_dataset import LeRobotDataset
import lerobot

backend = "pyav" if lerobot.__version__ >= "0.4" else "torchcodec"
ds = LeRobotDataset("local/ours", root=sys.argv[1], delta_timestamps={"action": [-0.1, 0.0]}, video_backend=backend)
items = [ds[i] for i in range(len(ds))]
print(json.dumps({
    "version": ds.meta.info["codebase_version"],
    "episodes": ds.num_episodes,
    "actions": [item["action"][1].tolist() for item in items],
    "action_is_pad": [item["action_is_pad"].tolist() for item in items],
    "images": [item["observation.image"].tolist() for item in items[:3]],
    "task": items[0]["task"],
}))
"""


@pytest.mark.parametrize("version,variable", [("v3.0", "LEROBOT_V30_PYTHON"), ("v2.1", "LEROBOT_V21_PYTHON")])
def test_lerobot_loads_policylab_dataset(tmp_path, version, variable):
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"set {variable} to a python with LeRobot installed")
    root = tmp_path / "ours"
    episodes = write_synthetic_dataset(root, codebase_version=version)
    result = subprocess.run([python, "-c", READ_WITH_LEROBOT, str(root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["version"] == version and loaded["episodes"] == 3
    np.testing.assert_array_equal(
        np.array(loaded["actions"], dtype=np.float32), np.concatenate([e["action"] for e in episodes])
    )
    assert loaded["action_is_pad"][0] == [True, False] and loaded["action_is_pad"][5] == [True, False]
    first = episodes[0]["observation.image"][:3].transpose(0, 3, 1, 2) / 255.0
    assert np.abs(np.array(loaded["images"]) - first).mean() < 4 / 255
    assert loaded["task"] == "Push the T-shaped block onto the T-shaped target."
