"""Checkpoints trained by LeRobot 0.3.2 and 0.6.1 (tests/fixtures/lerobot_checkpoints, made by LeRobot's own training
script) load in policylab and act exactly as in LeRobot: the same actions for the same observations, Diffusion's
sampling drawing the same noise."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import LEROBOT_CHECKPOINTS as FIXTURES
from helpers import executed_actions, run_policylab
from policylab.policies import PreTrainedPolicy

CASES = [(version, policy) for version in ("v03", "v06") for policy in ("act", "diffusion")]


def assert_acts_as_lerobot(folder: Path) -> None:
    reference = load_file(str(folder / "reference.safetensors"))
    observation = {k[len("input.") :]: v for k, v in reference.items() if k.startswith("input.")}
    policy = PreTrainedPolicy.from_pretrained(folder)
    actions = executed_actions(policy, observation, policy.config.n_action_steps)
    # 1e-4 absolute, plus float32 rounding at the actions' scale (PushT's are pixels, up to 512: one ulp is 6e-5)
    torch.testing.assert_close(actions, reference["actions"], atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("version,policy", CASES)
def test_a_lerobot_checkpoint_acts_as_in_lerobot(version, policy):
    assert_acts_as_lerobot(FIXTURES / version / policy)


@pytest.mark.parametrize("version,policy", CASES)
def test_the_translation_is_what_lerobot_trained(version, policy):
    loaded = PreTrainedPolicy.from_pretrained(FIXTURES / version / policy)
    assert loaded.lerobot_version == {"v03": "0.3", "v06": "0.6"}[version] and loaded.config.type == policy
    modes = loaded.config.input_normalization_modes
    assert modes["observation.environment_state"] == "identity"  # LeRobot's mapping has no ENV entry
    if policy == "diffusion":
        assert loaded.config.timestep_spacing == "leading" and modes["observation.state"] == "min_max"


@pytest.mark.slow
@pytest.mark.parametrize("version,policy", [("v03", "act"), ("v06", "diffusion")])
def test_policylab_eval_takes_a_lerobot_checkpoint(tmp_path, version, policy):
    result = run_policylab(
        "eval", f"--policy.path={FIXTURES / version / policy}", "--env.type=pusht", "--eval.n_episodes=2",
        "--eval.n_videos=0", "--env.max_episode_steps=10", f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "eval_info.json").is_file()


def test_a_lerobot_layout_policylab_does_not_know_is_refused_naming_the_files(tmp_path):
    folder = tmp_path / "act"
    shutil.copytree(FIXTURES / "v06/act", folder)
    for processor in folder.glob("policy_*processor*"):
        processor.unlink()
    result = run_policylab("eval", f"--policy.path={folder}", "--eval.n_episodes=1")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "a LeRobot checkpoint in a layout policylab does not know" in result.stderr
    assert "policy_preprocessor.json" in result.stderr and "model.safetensors" in result.stderr


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.parametrize("variable", ["LEROBOT_V21_PYTHON", "LEROBOT_V30_PYTHON"])
def test_checkpoints_lerobot_trains_now_act_as_in_lerobot(tmp_path, variable):
    """The fixtures made again by the LeRobot of the side venv, then checked the same way."""
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"set {variable} to a python with LeRobot installed")
    script = FIXTURES / "make_checkpoints.py"
    result = subprocess.run(
        [python, str(script), sys.executable, str(tmp_path)], capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=FIXTURES.parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (version,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for policy in ("act", "diffusion"):
        assert_acts_as_lerobot(version / policy)
