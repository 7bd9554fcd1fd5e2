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


def pytest_terminal_summary(terminalreporter):
    """How many LeRobot interop checks ran: CI shows it on every run (the side-venv ones skip without LeRobot)."""
    counts = {
        outcome: sum(
            "interop" in report.keywords
            for report in terminalreporter.stats.get(outcome, [])
            if report.when in ("call", "setup")
        )
        for outcome in ("passed", "failed", "skipped")
    }
    terminalreporter.write_line(
        f"LeRobot interop: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        "(the skipped ones need LEROBOT_V30_PYTHON / LEROBOT_V21_PYTHON pointing at LeRobot side venvs)"
    )
