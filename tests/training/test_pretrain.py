"""`policylab pretrain`: a camera trunk learns to predict the recorded keypoints from the frames, through the CLI,
and a policy starts from it, frozen or not."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS, run_policylab
from policylab.datasets import LeRobotDataset, LeRobotDatasetMetadata
from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.report.compare import pretraining_notes
from policylab.runs import Checkpoint
from policylab.training.pretrain import TrunkPretraining

CAMERA_INPUTS = "--policy.input_shapes={observation.image: [3, 96, 96], observation.state: [2]}"
SMALL_CNN = "--policy.vision_backbone=small_cnn"


def trunk_of(folder) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "checkpoints/last/pretrained_model/model.safetensors"))
    return {k: v for k, v in weights.items() if ".backbone." in k or k.startswith("model.backbone")}


@pytest.mark.parametrize("policy", [TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS], ids=["act", "diffusion"])
def test_pretrain_then_train_from_the_frozen_trunk(recorded_pusht, tmp_path, policy):
    flags = [*policy, CAMERA_INPUTS, SMALL_CNN, f"--dataset.root={recorded_pusht}"]
    pretrained = tmp_path / "pretrain"
    result = run_policylab("pretrain", *flags, "--dataset.val_episodes=[2]", "--training.steps=30",
                           "--training.batch_size=8", "--training.log_freq=10", f"--output_dir={pretrained}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "held-out episodes with a mean |error|" in result.stdout
    info = json.loads((pretrained / "pretrain_info.json").read_text())
    assert info["target"] == "observation.environment_state" and info["held_out_episodes"] == [2]
    assert len(info["held_out"]["target_l1_per_dim"]) == 16 and info["held_out"]["frames"] > 0
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    assert all("target_l1" in r for r in records if "loss" in r)  # the trunk's error, logged as it trains
    assert (pretrained / "checkpoints/last/training_state/head.safetensors").is_file()

    trained = tmp_path / "policy"
    result = run_policylab("train", *flags, f"--init_from={pretrained}", "--training.lr_backbone=0",
                           "--training.steps=3", "--training.batch_size=4", f"--output_dir={trained}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    start, end = trunk_of(pretrained), trunk_of(trained)
    assert start and start.keys() == end.keys()
    assert all(torch.equal(start[k], end[k]) for k in start)  # frozen: the pretrained trunk, unchanged


def test_train_with_pretrain_steps_pretrains_the_trunk_first_and_keeps_it_frozen(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    flags = [*TINY_DIFFUSION_FLAGS, CAMERA_INPUTS, SMALL_CNN, f"--dataset.root={recorded_pusht}", "--pretrain.steps=6",
             "--pretrain.batch_size=8", "--training.steps=3", "--training.batch_size=4", f"--output_dir={out}",
             "--training.cache_features=true"]  # fmt: skip
    result = run_policylab("train", *flags)
    assert result.returncode == 0, result.stderr
    assert "pretraining the camera trunk to predict observation.environment_state (6 steps)" in result.stderr
    assert re.search(r"observation.image: trunk features of \d+ frames kept in memory", result.stderr)
    info = json.loads((out / "pretrain/pretrain_info.json").read_text())
    assert info["held_out"]["frames"] > 0  # --pretrain.val_fraction of the episodes measure the trunk
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["init_from"] == str(out / "pretrain") and saved["training"]["lr_backbone"] == 0
    start, end = trunk_of(out / "pretrain"), trunk_of(out)
    assert start and all(torch.equal(start[k], end[k]) for k in start)
    facts = Checkpoint.resolve(out).training_facts()  # what reports say about the run
    assert facts["trunk_pretrained_on"] == "observation.environment_state" and facts["pretrain_seconds"] > 0
    (note,) = pretraining_notes(
        [{"name": "dp", "training": facts, "inputs": ["observation.image", "observation.state"]}]
    )
    assert (
        "pretrained to predict observation.environment_state" in note
        and "(observation.image, observation.state)" in note
    )

    again = run_policylab("train", *flags, "--resume=true", "--training.steps=4")
    assert again.returncode == 0, again.stderr
    assert "pretraining" not in again.stderr  # a run that has started never pretrains again
    assert "trunk features of" in again.stderr  # the resumed run's trunk is still frozen: cached again
    both = run_policylab("train", *flags, f"--init_from={out}", f"--output_dir={tmp_path / 'other'}")
    assert both.returncode == 2 and "give one" in both.stderr, both.stderr


def test_the_trunk_learns_the_target_while_the_rest_of_the_policy_is_untouched(recorded_pusht):
    meta = LeRobotDatasetMetadata(recorded_pusht)
    config = ACTConfig(input_shapes={"observation.image": [3, 96, 96], "observation.state": [2]},
                       output_shapes={"action": [2]}, vision_backbone="small_cnn", dim_model=16, n_heads=2,
                       dim_feedforward=16, n_encoder_layers=1, n_vae_encoder_layers=1, chunk_size=4, n_action_steps=4)  # fmt: skip
    policy = ACTPolicy(config, dataset_stats=meta.stats)
    objective = TrunkPretraining(
        policy, "observation.environment_state", meta.stats["observation.environment_state"], 8
    )
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    dataset = LeRobotDataset(recorded_pusht, cameras=["observation.image"])
    batch = dataset.gather(dataset.frame_positions()[::7][:32])
    optimizer = torch.optim.AdamW(
        [*policy.camera_backbones()[0].parameters(), *objective.head.parameters()], lr=3e-3
    )
    losses = []
    for _ in range(40):
        loss = objective(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.backbone.") for k in changed)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--pretrain.target=observation.velocity",
            "--pretrain.target=observation.velocity: .* has no such vector",
        ),
        ("--training.lr_backbone=0", "--training.lr_backbone=0 freezes the trunk"),
        ("--policy.input_shapes={observation.state: [2]}", "no camera input to pretrain"),
    ],
)
def test_what_cannot_be_pretrained_is_one_line_before_any_work(recorded_pusht, tmp_path, flag, message):
    result = run_policylab("pretrain", *TINY_ACT_FLAGS, CAMERA_INPUTS, SMALL_CNN, f"--dataset.root={recorded_pusht}",
                           flag, f"--output_dir={tmp_path / 'out'}")  # fmt: skip
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            TINY_DIFFUSION_FLAGS,
            "--training.cache_features=true computes a frozen trunk's features once: freeze it",
        ),
        ([*TINY_ACT_FLAGS, "--training.lr_backbone=0"], "act policies train from frames only"),
    ],
    ids=["trunk_not_frozen", "act"],
)
def test_cached_features_need_a_frozen_trunk_and_a_policy_that_takes_them(
    recorded_pusht, tmp_path, flags, message
):
    result = run_policylab("train", *flags, CAMERA_INPUTS, SMALL_CNN, f"--dataset.root={recorded_pusht}",
                           "--training.cache_features=true", "--training.steps=2", f"--output_dir={tmp_path / 'out'}")  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
