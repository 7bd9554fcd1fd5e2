"""A dataset shaped like an SO-101 pick-and-place recording (6-D state and action with a gripper, two cameras of
different sizes, 30 fps, task strings) trains with both policies through the CLI, with held-out validation, and
is measured offline, plotted and compared without a simulator."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import run_policylab
from synthetic import SO101_JOINTS

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).parents[1] / "fixtures/so101_pick_place"
POLICIES = {
    "act": ["--policy.type=act", "--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64",
            "--policy.n_encoder_layers=1", "--policy.n_vae_encoder_layers=1", "--policy.chunk_size=10",
            "--policy.n_action_steps=5", "--policy.resize_shape=[32,32]"],
    "diffusion": ["--policy.type=diffusion", "--policy.down_dims=[16,32]", "--policy.diffusion_step_embed_dim=16",
                  "--policy.n_groups=4", "--policy.num_train_timesteps=20", "--policy.noise_scheduler_type=DDIM",
                  "--policy.num_inference_steps=4", "--policy.resize_shape=[32,32]", "--policy.crop_shape=[28,28]"],
}  # fmt: skip


@pytest.fixture(scope="module")
def robot(tmp_path_factory) -> dict:
    """The fixture dataset (copied: reading it builds a frame cache) and both policies trained on it."""
    out = tmp_path_factory.mktemp("robot")
    root = out / "so101"
    shutil.copytree(FIXTURE, root)
    runs = {}
    for name, flags in POLICIES.items():
        runs[name] = out / name
        result = run_policylab(
            "train", *flags, f"--dataset.root={root}", "--dataset.val_episodes=[4,5]", "--training.steps=6",
            "--training.batch_size=4", "--training.val_freq=3", "--training.val_batches=2", "--training.log_freq=3",
            f"--output_dir={runs[name]}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "validation loss" in result.stderr
    return {"root": root, **runs}


def test_both_policies_train_with_a_held_out_split_and_keep_the_best_checkpoint(robot):
    for name in POLICIES:
        split = json.loads((robot[name] / "split.json").read_text())
        assert split["train_episodes"] == [0, 1, 2, 3] and split["val_episodes"] == [4, 5]
        records = [json.loads(line) for line in (robot[name] / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in records if "val" in r]
        assert [r["step"] for r in val] == [3, 6] and len(val[0]["val"]["action_l1_per_dim"]) == 6
        best = min(val, key=lambda r: r["val"]["action_l1"])["step"]
        assert (robot[name] / "checkpoints/best").resolve().name == f"{best:06d}"


def test_offline_eval_measures_the_held_out_episodes_in_the_datasets_units(robot, tmp_path):
    result = run_policylab("eval", f"--policy.path={robot['act']}", f"--dataset.root={robot['root']}",
                           f"--output_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "eval_info.json").read_text())
    a = info["aggregated"]
    assert info["mode"] == "offline" and info["episodes"]["indices"] == [4, 5]
    assert (
        a["action_names"] == SO101_JOINTS
        and len(a["action_l1_per_dim"]) == 6
        and len(a["l1_by_chunk_step"]) == 10
    )
    assert 0 <= a["gripper_agreement"] <= 1 and a["jerk_demonstrated"] > 0 and a["inference_ms_per_step"] > 0
    assert [e["episode_index"] for e in info["per_episode"]] == [4, 5]
    assert "gripper agreement" in result.stdout and "shoulder_pan.pos" in result.stdout


def test_plot_draws_whole_held_out_episodes_per_joint(robot, tmp_path):
    result = run_policylab("plot", f"--policy.path={robot['diffusion']}", f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} == {
        "policy_comparison.png",
        "trajectories.png",
        "training_curves.png",
    }


def test_compare_without_a_simulator_reports_the_offline_figures(robot, tmp_path):
    result = run_policylab(
        "compare", "--policies", str(robot["act"]), str(robot["diffusion"]), f"--dataset.root={robot['root']}",
        "--bench.n_calls=2", "--bench.control_steps=5", f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert (
        "action L1 (chunks)" in report
        and "gripper agreement" in report
        and "success" not in report.split("\n")[2]
    )
    assert (tmp_path / "act/trajectories.png").is_file()


def test_bad_robot_inputs_are_one_line(robot, tmp_path):
    empty = run_policylab("train", *POLICIES["act"], f"--dataset.root={robot['root']}", "--dataset.val_episodes=[9]",
                          "--training.steps=1", f"--output_dir={tmp_path / 'a'}")  # fmt: skip
    assert empty.returncode == 1 and "--dataset.val_episodes: episodes [9] are not among" in empty.stderr
    every = run_policylab("train", *POLICIES["act"], f"--dataset.root={robot['root']}",
                          "--dataset.val_episodes=[0,1,2,3,4,5]", "--training.steps=1", f"--output_dir={tmp_path / 'b'}")  # fmt: skip
    assert every.returncode == 1 and "nothing is left to train on" in every.stderr
    camera = run_policylab("train", *POLICIES["act"], f"--dataset.root={robot['root']}", "--training.steps=1",
                           "--policy.input_shapes={observation.images.top: [3, 48, 64], observation.state: [6]}",
                           f"--output_dir={tmp_path / 'c'}")  # fmt: skip
    assert (
        camera.returncode == 1
        and "observation.images.top" in camera.stderr
        and "Traceback" not in camera.stderr
    )
    for result in (empty, every, camera):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
