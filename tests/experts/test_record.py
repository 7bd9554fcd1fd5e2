"""End to end through the real CLI: record, reload, compare with a replay of the same seeds, resume, kill."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import run_policylab
from policylab.datasets import LeRobotDataset
from policylab.envs.configs import PushTEnvConfig
from policylab.experts.pusht import PushTExpertConfig
from policylab.experts.record import run_expert_episode

pytestmark = pytest.mark.slow


policylab = run_policylab


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("record") / "pusht"
    result = policylab(
        "record", "--env.type=pusht", f"--dataset.root={root}", "--dataset.num_episodes=3", "--seed=0"
    )
    assert result.returncode == 0, result.stderr
    return root, result


def test_record_prints_summary_and_path(recorded):
    root, result = recorded
    assert f"dataset written to {root.resolve()}" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert summary["episodes_written"] == 3 and summary["expert_success_rate"] == 1.0  # seeds 0-2 are solved
    log = json.loads((root / "meta/recording.json").read_text())
    assert log["episodes_written"] == 3 and len(log["succeeded_seeds"]) == 3
    assert [a["seed"] for a in log["attempts"]] == list(range(len(log["attempts"])))


def test_recorded_frames_round_trip_exactly(recorded):
    root, _ = recorded
    ds = LeRobotDataset(root=root)
    log = json.loads((root / "meta/recording.json").read_text())
    assert ds.meta.total_episodes == 3
    for episode, seed in enumerate(log["succeeded_seeds"]):
        replay = run_expert_episode(PushTEnvConfig(), PushTExpertConfig(), seed).frames
        record = ds.episodes[episode]
        items = [ds[i] for i in range(record.dataset_from_index, record.dataset_to_index)]
        assert len(items) == len(replay["action"])
        for key in ["action", "observation.state", "observation.environment_state", "next.reward"]:
            np.testing.assert_array_equal(np.stack([item[key].numpy() for item in items]), replay[key])
        assert items[-1]["next.success"].item() and not items[0]["next.success"].item()
        images = np.stack([item["observation.image"].numpy() for item in items])
        expected = replay["observation.image"].transpose(0, 3, 1, 2) / 255.0
        assert np.abs(images - expected).mean() < 3 / 255  # AV1 at crf 30: video-codec tolerance


def test_rerun_resumes_without_repeating(recorded, tmp_path):
    root, _ = recorded
    before = LeRobotDataset(root=root)
    first_actions = before[0]["action"]
    result = policylab(
        "record", f"--dataset.root={root}", "--dataset.num_episodes=4", "--seed=0", "--num_workers=1"
    )
    assert result.returncode == 0, result.stderr
    after = LeRobotDataset(root=root)
    log = json.loads((root / "meta/recording.json").read_text())
    assert after.meta.total_episodes == 4 and log["episodes_written"] == 4
    assert len(set(log["succeeded_seeds"])) == 4
    np.testing.assert_array_equal(after[0]["action"], first_actions)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_recording_leaves_valid_dataset_and_resumes(tmp_path, stop):
    root = tmp_path / "pusht"
    args = [
        sys.executable,
        "-m",
        "policylab.cli",
        "record",
        f"--dataset.root={root}",
        "--dataset.num_episodes=20",
    ]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background jobs inherit SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _committed(root):
        time.sleep(0.2)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=90)  # returns only once the workers are gone too
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "complete episodes are in" in stderr and "Rerun the same command to resume" in stderr
    committed = LeRobotDataset(root=root).meta.total_episodes
    assert 1 <= committed < 20
    result = policylab(
        "record", f"--dataset.root={root}", f"--dataset.num_episodes={committed + 1}", "--num_workers=1"
    )
    assert result.returncode == 0, result.stderr
    assert LeRobotDataset(root=root).meta.total_episodes == committed + 1


def _committed(root) -> bool:
    info = root / "meta/info.json"
    return info.is_file() and json.loads(info.read_text())["total_episodes"] >= 1


def test_record_v21_layout(tmp_path):
    root = tmp_path / "pusht_v21"
    result = policylab(
        "record", f"--dataset.root={root}", "--dataset.num_episodes=1", "--dataset.codebase_version=v2.1",
        "--env.obs_type=environment_state_agent_pos", "--num_workers=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (root / "meta/episodes.jsonl").is_file() and (
        root / "data/chunk-000/episode_000000.parquet"
    ).is_file()
    ds = LeRobotDataset(root=root)
    assert ds.meta.codebase_version == "v2.1" and "observation.image" not in ds.features


def test_typo_in_flag_fails_before_work(tmp_path):
    result = policylab("record", f"--dataset.rot={tmp_path}")
    assert result.returncode == 2
    assert "unknown flag --dataset.rot; did you mean --dataset.root" in result.stderr
    assert not any(tmp_path.iterdir())


def test_help_lists_flags_with_defaults():
    result = policylab("record", "--help")
    assert result.returncode == 0 and "--dataset.num_episodes=50" in result.stdout


def test_cli_lists_commands():
    result = policylab("--help")
    assert result.returncode == 0 and "record" in result.stdout


def test_failed_episodes_are_kept_only_on_request_and_attempts_are_bounded(tmp_path):
    # 5 steps are too few for the expert: every attempt fails
    args = ["--env.max_episode_steps=5", "--env.obs_type=environment_state_agent_pos", "--num_workers=1"]
    result = policylab(
        "record", f"--dataset.root={tmp_path / 'a'}", "--dataset.num_episodes=2", "--max_attempts=3", *args
    )
    assert result.returncode == 1
    assert "0 of 2 episodes written" in result.stderr and "succeeded in 0 of 3 attempts" in result.stderr
    log = json.loads((tmp_path / "a/meta/recording.json").read_text())
    assert log["failed_seeds"] == [0, 1, 2] and log["episodes_written"] == 0

    result = policylab(
        "record", f"--dataset.root={tmp_path / 'b'}", "--dataset.num_episodes=2", "--keep_failed=true", *args
    )
    assert result.returncode == 0, result.stderr
    ds = LeRobotDataset(root=tmp_path / "b")
    assert ds.meta.total_episodes == 2 and len(ds) == 10 and not ds[9]["next.success"].item()


def test_bad_values_and_changed_settings_are_refused_before_work(tmp_path):
    root = tmp_path / "pusht"
    for flag, message in [
        ("--num_workers=0", "--num_workers: must be at least 1"),
        ("--env.obs_type=rgb", "--env.obs_type: must be one of"),
        ("--dataset.codebase_version=v9", "--dataset.codebase_version: must be one of v3.0, v2.1"),
    ]:
        result = policylab("record", f"--dataset.root={root}", flag)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not root.exists()
    args = ["record", f"--dataset.root={root}", "--dataset.num_episodes=1", "--num_workers=1"]
    assert policylab(*args, "--env.obs_type=environment_state_agent_pos").returncode == 0
    result = policylab(*args, "--env.obs_type=environment_state_agent_pos", "--expert.diversity=0")
    assert result.returncode == 1 and "other settings (--expert.* differ)" in result.stderr
    result = policylab(*args, "--env.obs_type=environment_state_agent_pos", "--dataset.codebase_version=v2.1")
    assert result.returncode == 1 and "holds a v3.0 dataset; cannot append as v2.1" in result.stderr
