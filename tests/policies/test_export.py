"""`policylab export --to=lerobot`: a policylab policy in LeRobot 0.6's layout, acting the same there."""

import dataclasses
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import KEYPOINT_INPUTS, TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS, executed_actions, run_policylab
from helpers import LEROBOT_CHECKPOINTS as FIXTURES
from policylab.policies import CheckpointError, PreTrainedPolicy
from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.policies.lerobot_format import export_to_lerobot

ACT_IN_LEROBOT = """
import sys
import torch
from safetensors.torch import load_file, save_file
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
folder, inputs, out = sys.argv[1:4]
config = PreTrainedConfig.from_pretrained(folder)
policy = get_policy_class(config.type).from_pretrained(folder).eval()
pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
observation = load_file(inputs)
policy.reset()
torch.manual_seed(11)
with torch.no_grad():
    actions = [post(policy.select_action(pre(dict(observation)))) for _ in range(policy.config.n_action_steps)]
save_file({"actions": torch.stack(actions, 1).contiguous()}, out)
"""


def observation_of(version: str, policy: str) -> dict:
    reference = load_file(str(FIXTURES / version / policy / "reference.safetensors"))
    return {k[len("input.") :]: v for k, v in reference.items() if k.startswith("input.")}


@pytest.mark.parametrize("policy", ["act", "diffusion"])
def test_an_exported_policy_reads_back_acting_the_same(tmp_path, policy):
    original = PreTrainedPolicy.from_pretrained(FIXTURES / "v06" / policy)
    export_to_lerobot(original, tmp_path / policy)
    assert {p.name for p in (tmp_path / policy).iterdir()} >= {
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
    }
    again = PreTrainedPolicy.from_pretrained(tmp_path / policy)
    observation, steps = observation_of("v06", policy), original.config.n_action_steps
    torch.testing.assert_close(
        executed_actions(again, observation, steps), executed_actions(original, observation, steps)
    )


def test_what_lerobot_cannot_run_is_refused_naming_the_field(tmp_path):
    config = ACTConfig(input_shapes={"observation.state": [2]}, output_shapes={"action": [2]}, n_obs_steps=2,
                       dim_model=16, n_heads=2, dim_feedforward=16, chunk_size=4, n_action_steps=4)  # fmt: skip
    stats = {k: {"mean": torch.zeros(2), "std": torch.ones(2)} for k in ("observation.state", "action")}
    with pytest.raises(CheckpointError, match=r"n_obs_steps=2: LeRobot's act has no such option"):
        export_to_lerobot(ACTPolicy(config, dataset_stats=stats), tmp_path)
    config = dataclasses.replace(config, n_obs_steps=1, vision_backbone="small_cnn")
    with pytest.raises(CheckpointError, match=r"vision_backbone='small_cnn': LeRobot's act has only ResNets"):
        export_to_lerobot(ACTPolicy(config, dataset_stats=stats), tmp_path)


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize("flags", [TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS], ids=["act", "diffusion"])
def test_a_policylab_checkpoint_acts_the_same_in_lerobot(recorded_pusht, tmp_path, flags):
    python = os.environ.get("LEROBOT_V30_PYTHON")
    if not python:
        pytest.skip("set LEROBOT_V30_PYTHON to a python with LeRobot 0.6 installed")
    extra = ["--policy.timestep_spacing=leading"] if "--policy.type=diffusion" in flags else []
    trained = run_policylab("train", *flags, *extra, KEYPOINT_INPUTS, f"--dataset.root={recorded_pusht}",
                            "--training.steps=3", "--training.batch_size=4", f"--output_dir={tmp_path / 'run'}")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    exported = run_policylab(
        "export", f"--policy.path={tmp_path / 'run'}", f"--output_dir={tmp_path / 'lerobot'}"
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    observation = observation_of("v03", "diffusion")  # PushT keypoints and agent positions
    save_file(observation, str(tmp_path / "observation.safetensors"))
    result = subprocess.run(
        [python, "-c", ACT_IN_LEROBOT, str(tmp_path / "lerobot"), str(tmp_path / "observation.safetensors"),
         str(tmp_path / "actions.safetensors")], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ours = PreTrainedPolicy.from_pretrained(tmp_path / "run")
    expected = executed_actions(ours, observation, ours.config.n_action_steps)
    torch.testing.assert_close(
        load_file(str(tmp_path / "actions.safetensors"))["actions"], expected, atol=1e-4, rtol=0
    )
