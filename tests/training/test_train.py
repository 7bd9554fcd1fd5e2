"""The training engine end to end through the real CLI, and the seed-style Python loop."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import KEYPOINT_INPUTS, TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS, run_policylab
from policylab.constants import HELD_OUT_SEED
from policylab.datasets import DatasetConfig, LeRobotDataset, LeRobotDatasetWriter
from policylab.errors import ConfigError
from policylab.evaluation import evaluate_policy
from policylab.policies import PreTrainedPolicy
from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.training import precision, trainer
from policylab.training.configs import TrainConfig, TrainingConfig
from policylab.utils.device import cpu_has_native_bfloat16
from synthetic import FEATURES, TASK, synthetic_episode, write_synthetic_dataset

pytestmark = pytest.mark.slow


def train_args(root: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "train", *TINY_ACT_FLAGS, KEYPOINT_INPUTS, f"--dataset.root={root}", f"--output_dir={output_dir}",
        "--training.batch_size=8", "--training.lr=1e-3", "--seed=7", *extra,
    ]  # fmt: skip


def losses(output_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) in file order: a step logged twice (e.g. not truncated on resume) shows up twice."""
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def test_train_writes_checkpoints_that_load_alone_bit_for_bit(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    result = run_policylab(
        *train_args(
            recorded_pusht, out, "--training.steps=6", "--training.save_freq=3", "--training.log_freq=1"
        )
    )
    assert result.returncode == 0, result.stderr
    assert f"checkpoints written to {(out / 'checkpoints').resolve()}" in result.stdout
    peaks = [json.loads(line)["peak_memory_mb"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(peaks) == 6 and all(p > 100 for p in peaks) and peaks == sorted(peaks)  # a peak never falls
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000003", "000006", "last"]
    last = out / "checkpoints/last"
    assert last.is_symlink() and last.resolve().name == "000006"
    assert {p.name for p in (last / "pretrained_model").iterdir()} == {"config.json", "model.safetensors"}
    assert {"state.json", "optimizer.safetensors", "rng.safetensors"} <= {
        p.name for p in (last / "training_state").iterdir()
    }
    assert [step for step, _ in losses(out)] == [1, 2, 3, 4, 5, 6]

    policy = PreTrainedPolicy.from_pretrained(last / "pretrained_model")
    assert isinstance(policy, ACTPolicy) and policy.config.chunk_size == 5
    saved = load_file(str(last / "pretrained_model/model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in policy.state_dict().items())  # statistics included
    ds = LeRobotDataset(root=recorded_pusht)
    obs = ds.gather(torch.arange(4).numpy())
    again = ACTPolicy.from_pretrained(last)  # the checkpoint folder itself works too
    assert torch.equal(policy.predict_action_chunk(obs), again.predict_action_chunk(obs))


def test_same_seed_same_loss_curve_and_kill_9_then_resume_reproduces_it(recorded_pusht, tmp_path):
    # bit-exact reproduction is a CPU property: on CUDA, cuDNN and atomic-add kernels are not deterministic
    steps = ["--training.steps=150", "--training.save_freq=10", "--training.log_freq=1", "--device=cpu"]
    straight = tmp_path / "straight"
    assert run_policylab(*train_args(recorded_pusht, straight, *steps)).returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "policylab.cli", *train_args(recorded_pusht, killed, *steps)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not (killed / "checkpoints/000010").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    kept = int((killed / "checkpoints/last").resolve().name)
    assert 10 <= kept < 150
    resumed = run_policylab("train", f"--output_dir={killed}", "--resume=true")
    assert resumed.returncode == 0, resumed.stderr
    # exactly: the weights, optimizer state, RNG and data order all round-trip through the checkpoint bit for bit
    assert losses(killed) == losses(straight)


def test_resume_and_output_dir_guards(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    assert run_policylab(*train_args(recorded_pusht, out, "--training.steps=2")).returncode == 0
    again = run_policylab(*train_args(recorded_pusht, out, "--training.steps=2"))
    assert (
        again.returncode == 2
        and "already holds a training run" in again.stderr
        and "--resume=true" in again.stderr
    )
    changed = run_policylab(
        "train", f"--output_dir={out}", "--resume=true", "--policy.chunk_size=7", "--policy.n_action_steps=7"
    )
    assert changed.returncode == 2 and "chunk_size" in changed.stderr
    nothing = run_policylab(
        *train_args(recorded_pusht, tmp_path / "new", "--training.steps=2", "--resume=true")
    )
    assert nothing.returncode == 2 and "no checkpoints/last" in nothing.stderr

    saved = json.loads((out / "train_config.json").read_text())
    del saved["policy"]["temporal_ensemble_coeff"]  # a run started before policylab had this field
    (out / "train_config.json").write_text(json.dumps(saved))
    older = run_policylab("train", f"--output_dir={out}", "--resume=true", "--training.steps=3")
    assert older.returncode == 0, older.stderr

    (out / "checkpoints/last/training_state/optimizer.safetensors").write_bytes(b"\x00" * 10)
    corrupt = run_policylab("train", f"--output_dir={out}", "--resume=true", "--training.steps=4")
    assert (
        corrupt.returncode == 1
        and "optimizer.safetensors" in corrupt.stderr
        and "Traceback" not in corrupt.stderr
    )


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    result = run_policylab(
        *train_args(
            recorded_pusht, out, "--training.steps=50", "--training.save_freq=1", "--training.lr=1e30"
        )
    )
    assert result.returncode == 1 and "training stopped" in result.stderr and "Traceback" not in result.stderr
    last = out / "checkpoints/last/pretrained_model/model.safetensors"
    assert all(torch.isfinite(v).all() for v in load_file(str(last)).values())


def test_bad_flags_fail_before_any_work_naming_the_flag(recorded_pusht, tmp_path):
    typo = run_policylab(*train_args(recorded_pusht, tmp_path / "a", "--training.stepz=3"))
    assert (
        typo.returncode == 2
        and "--training.stepz" in typo.stderr
        and "did you mean --training.steps" in typo.stderr
    )
    kind = run_policylab(
        "train", "--policy.type=actt", f"--dataset.root={recorded_pusht}", "--training.steps=1"
    )
    assert kind.returncode == 2 and "act" in kind.stderr.replace("actt", "") and "diffusion" in kind.stderr
    both = run_policylab(
        *train_args(recorded_pusht, tmp_path / "b", "--training.steps=3", "--training.num_epochs=1")
    )
    assert both.returncode == 2 and "exactly one of --training.steps and --training.num_epochs" in both.stderr
    missing = run_policylab("train", *TINY_ACT_FLAGS, "--policy.input_shapes={observation.wrist: [3]}",
                            f"--dataset.root={recorded_pusht}", "--training.steps=1", f"--output_dir={tmp_path / 'c'}")  # fmt: skip
    assert (
        missing.returncode == 1
        and "observation.wrist" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    (tmp_path / "file").write_text("")
    unwritable = run_policylab(*train_args(recorded_pusht, tmp_path / "file/run", "--training.steps=1"))
    assert unwritable.returncode == 2 and unwritable.stderr == (
        f"policylab train: error: --output_dir={tmp_path / 'file/run'}: cannot create it ({tmp_path / 'file'} is a "
        "file, not a folder)\n"
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the writer computes statistics of the inf
def test_broken_datasets_stop_with_one_line_naming_the_problem(tmp_path):
    nan = tmp_path / "nan"
    episode = synthetic_episode(12, seed=0)
    episode["observation.state"][4] = np.inf
    LeRobotDatasetWriter(nan, fps=10, features=FEATURES).add_episode(episode, TASK)
    state_only = "--policy.input_shapes={observation.state: [2]}"
    result = run_policylab("train", *TINY_ACT_FLAGS, state_only, f"--dataset.root={nan}", "--training.steps=1",
                           f"--output_dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        "column 'observation.state' of episode 0 holds [inf, inf] at frame 4"
        in result.stderr.splitlines()[-1]
    )
    assert not (tmp_path / "run").exists()

    video = tmp_path / "video"
    write_synthetic_dataset(video, lengths=(12,))
    mp4 = video / "videos/observation.image/chunk-000/file-000.mp4"
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2] + bytes(mp4.stat().st_size // 2))
    camera = "--policy.input_shapes={observation.image: [3, 96, 96], observation.state: [2]}"
    result = run_policylab("train", *TINY_ACT_FLAGS, camera, f"--dataset.root={video}", "--training.steps=1",
                           f"--output_dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "file-000.mp4" in line]
    assert len(errors) == 1 and errors[0].startswith("policylab train: error: ")  # on a line of its own, once


@pytest.mark.skipif(not cpu_has_native_bfloat16(), reason="this CPU has no native bfloat16")
def test_amp_on_a_cpu_trains_in_bfloat16_and_saves_float32_weights(recorded_pusht, tmp_path):
    runs = {"fp32": tmp_path / "fp32", "amp": tmp_path / "amp"}
    fp32 = run_policylab(
        *train_args(recorded_pusht, runs["fp32"], "--training.steps=1", "--training.log_freq=1")
    )
    amp = run_policylab(*train_args(recorded_pusht, runs["amp"], "--training.steps=20", "--training.amp=true",
                                    "--training.log_freq=1"))  # fmt: skip
    assert fp32.returncode == 0 and amp.returncode == 0, fp32.stderr + amp.stderr
    curve = [loss for _, loss in losses(runs["amp"])]
    first_fp32 = losses(runs["fp32"])[0][1]
    # the same seed, so the same weights and batch: the first loss differs only by the forward's precision
    assert curve[0] != first_fp32 and curve[0] == pytest.approx(first_fp32, rel=0.05)
    assert all(math.isfinite(loss) for loss in curve) and sum(curve[-5:]) < 0.8 * sum(curve[:5])
    saved = load_file(str(runs["amp"] / "checkpoints/last/pretrained_model/model.safetensors"))
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}


def test_amp_autocasts_to_bfloat16_on_a_cpu_that_has_it_and_is_refused_elsewhere_before_any_work(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    autocast, scaler = precision.mixed_precision(torch.device("cpu"), amp=True)
    with autocast:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert scaler is None
    with pytest.raises(ConfigError, match=r"--training.amp=true: .* not on mps"):
        precision.mixed_precision(torch.device("mps"), amp=True)
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: False)
    config = TrainConfig(
        policy=ACTConfig(), dataset=DatasetConfig(root=str(tmp_path / "data")), device="cpu",
        training=TrainingConfig(steps=1, amp=True), output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"--training.amp=true: this CPU has no native bfloat16"):
        trainer.train(config)
    assert not (tmp_path / "run").exists()


def test_evaluation_during_training_is_logged_and_is_the_checkpoints_evaluation(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    result = run_policylab(
        *train_args(
            recorded_pusht, out, "--training.steps=4", "--training.eval_freq=4", "--training.eval_episodes=2"
        )
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (logged,) = [r for r in records if "eval" in r]
    assert logged["step"] == 4
    again = evaluate_policy(
        PreTrainedPolicy.from_pretrained(out / "checkpoints/000004"), "pusht", n_episodes=2, seed=HELD_OUT_SEED,
        progress=False,
    )  # fmt: skip
    for key in ("success_rate", "avg_steps", "avg_reward", "avg_max_reward", "path_efficiency"):
        assert logged["eval"][key] == pytest.approx(again[key]), key


def test_training_fits_a_small_dataset_and_says_how_long_it_takes(recorded_pusht, tmp_path):
    out = tmp_path / "run"
    result = run_policylab(
        *train_args(
            recorded_pusht, out, "--training.steps=80", "--training.log_freq=10", "--dataset.episodes=[0]"
        )
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"steps/s over 10 steps: the remaining 69 steps take about \d+ s \(done around", result.stderr
    )
    curve = [loss for _, loss in losses(out)]
    assert curve[-1] < curve[0] / 3, curve  # one episode, 80 steps at lr 1e-3: a working loop fits it


def test_two_processes_with_torchrun_train_and_write_one_checkpoint(recorded_pusht, tmp_path):
    out = tmp_path / "ddp"
    policylab = shutil.which("policylab", path=os.path.dirname(sys.executable))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--no-python", policylab,
         *train_args(recorded_pusht, out, "--training.steps=60", "--training.log_freq=10", "--training.save_freq=60",
                     "--device=cpu")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    curve = dict(losses(out))
    assert curve[60] < curve[10]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000060", "last"]
    assert json.loads((out / "train_config.json").read_text())["training"]["batch_size"] == 8
    assert result.stdout.count("checkpoints written to") == 1  # rank 0 alone prints where they went


def test_seed_style_python_loop(recorded_pusht, tmp_path):
    """The loop tutorials write: dataset windows from the config, DataLoader, AdamW, clipping, cosine, save."""
    torch.manual_seed(0)
    features = LeRobotDataset(root=recorded_pusht).meta.features
    config = ACTConfig(
        input_shapes={"observation.state": [2], "observation.environment_state": [16]},
        output_shapes={"action": [2]},
        chunk_size=10, n_action_steps=10, dim_model=64, n_heads=2, dim_feedforward=128, n_layers=1, latent_dim=8,
        n_encoder_layers=2, n_vae_encoder_layers=1, pretrained_backbone=False,
    ).with_dataset_features(features)  # fmt: skip
    dataset = LeRobotDataset(root=recorded_pusht, delta_timestamps=config.delta_timestamps(10))
    policy = ACTPolicy(config, dataset_stats=dataset.meta.stats)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=60)
    device = torch.device("cpu")
    l1 = []
    for step, batch in enumerate(loader):
        batch = {k: v.to(device) for k, v in batch.items()}
        output = policy.forward(batch)
        output["loss"].backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        l1.append(output["l1_loss"].item())
        if step == 59:
            break
    assert sum(l1[-10:]) < 0.7 * sum(l1[:10])
    torch.save(policy.state_dict(), tmp_path / "policy.pt")
    reloaded = ACTPolicy(config)
    reloaded.load_state_dict(torch.load(tmp_path / "policy.pt", weights_only=True))
    obs = dataset.gather(torch.arange(3).numpy())
    assert torch.equal(reloaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))


def test_diffusion_trains_with_ema_and_a_resume_from_an_earlier_checkpoint_is_exact(recorded_pusht, tmp_path):
    out = tmp_path / "dp"
    args = ["train", *TINY_DIFFUSION_FLAGS, KEYPOINT_INPUTS, f"--dataset.root={recorded_pusht}", f"--output_dir={out}",
            "--training.batch_size=8", "--training.steps=6", "--training.save_freq=3", "--training.log_freq=1",
            "--training.warmup_steps=0", "--training.ema_decay=0.5", "--device=cpu"]  # fmt: skip
    result = run_policylab(*args)
    assert result.returncode == 0, result.stderr
    straight = losses(out)
    last = out / "checkpoints/last"
    averaged = load_file(str(last / "pretrained_model/model.safetensors"))
    raw = load_file(str(last / "training_state/model.safetensors"))
    assert not torch.equal(
        averaged["unet.final_conv.1.weight"], raw["unet.final_conv.1.weight"]
    )  # EMA is saved
    policy = PreTrainedPolicy.from_pretrained(last)
    assert type(policy).__name__ == "DiffusionPolicy"

    # as if the run had been killed right after its step-3 checkpoint
    shutil.rmtree(out / "checkpoints/000006")
    (out / "checkpoints/last").unlink()
    (out / "checkpoints/last").symlink_to("000003")
    resumed = run_policylab("train", f"--output_dir={out}", "--resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == straight
    assert torch.equal(load_file(str(last / "pretrained_model/model.safetensors"))["unet.final_conv.1.weight"],
                       averaged["unet.final_conv.1.weight"])  # fmt: skip


def test_init_from_starts_a_network_with_fewer_layers_from_a_trained_one(recorded_pusht, tmp_path):
    def diffusion_run(name, *flags):
        return run_policylab("train", *TINY_DIFFUSION_FLAGS, KEYPOINT_INPUTS, f"--dataset.root={recorded_pusht}",
                             f"--output_dir={tmp_path / name}", "--training.batch_size=4", "--training.steps=2",
                             *flags)  # fmt: skip

    assert diffusion_run("full").returncode == 0
    full = tmp_path / "full"
    cut = diffusion_run("cut", f"--init_from={full}", "--policy.n_mid_res_blocks=0", "--training.lr=1e-12")
    assert cut.returncode == 0, cut.stderr
    assert "left out, not in this network: unet.mid_modules" in cut.stderr
    trained = load_file(str(full / "checkpoints/last/pretrained_model/model.safetensors"))
    started = load_file(str(tmp_path / "cut/checkpoints/last/pretrained_model/model.safetensors"))
    assert set(trained) - set(started) == {key for key in trained if key.startswith("unet.mid_modules.")}
    for key, value in started.items():  # lr 1e-12: still the trained weights
        torch.testing.assert_close(value, trained[key], msg=key)

    more = diffusion_run("more", f"--init_from={full}", "--policy.n_res_blocks=3")
    assert more.returncode == 2 and "has no weights for" in more.stderr and "not more" in more.stderr
    wider = diffusion_run("wider", f"--init_from={full}", "--policy.down_dims=[8,16]")
    assert wider.returncode == 2 and "has shape" in wider.stderr and "Traceback" not in wider.stderr
    act = run_policylab(
        *train_args(recorded_pusht, tmp_path / "act", "--training.steps=1", f"--init_from={full}")
    )
    assert act.returncode == 2 and "is a policy of type 'diffusion'; this run trains 'act'" in act.stderr
