"""Shared fixtures: tiny real datasets written by policylab's own writer (no mocks)."""

import pytest

from helpers import run_policylab
from synthetic import write_synthetic_dataset


@pytest.fixture(params=["v3.0", "v2.1"])
def synthetic_dataset(request, tmp_path):
    root = tmp_path / f"synthetic_{request.param}"
    return root, write_synthetic_dataset(root, codebase_version=request.param)


@pytest.fixture(scope="session")
def recorded_pusht(tmp_path_factory):
    """Three expert PushT episodes (image, keypoints, state), recorded once per session by the real CLI."""
    root = tmp_path_factory.mktemp("recorded") / "pusht"
    result = run_policylab("record", f"--dataset.root={root}", "--dataset.num_episodes=3", "--seed=0")
    assert result.returncode == 0, result.stderr
    return root
