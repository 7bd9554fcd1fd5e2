"""End to end through the real CLI: tiny ACT (camera + state) and Diffusion (keypoints + state) policies are
trained for a few steps, then evaluated, benchmarked, plotted and compared."""

import json
from pathlib import Path

import av
import pytest
from PIL import Image

from helpers import KEYPOINT_INPUTS, TINY_ACT_FLAGS, TINY_DIFFUSION_FLAGS, run_policylab
from policylab.datasets import LeRobotDataset
from policylab.evaluation.evaluate import AGGREGATED_KEYS
from policylab.policies import PreTrainedPolicy
from policylab.policies.act import ACTConfig, ACTPolicy
from policylab.report.plots import (
    COLUMN_INCHES,
    CURVE_PANEL_INCHES,
    DPI,
    ROW_INCHES,
    visualize_action_predictions,
)

pytestmark = pytest.mark.slow
CAMERA_INPUTS = "--policy.input_shapes={observation.image: [3, 96, 96], observation.state: [2]}"
SHORT_EPISODES = "--env.max_episode_steps=15"


@pytest.fixture(scope="module")
def runs(recorded_pusht, tmp_path_factory) -> dict[str, Path]:
    """Two training runs on the recorded episodes: ACT on camera + state, Diffusion on keypoints + state."""
    out = tmp_path_factory.mktemp("runs")
    flags = {"act": [*TINY_ACT_FLAGS, CAMERA_INPUTS], "diffusion": [*TINY_DIFFUSION_FLAGS, KEYPOINT_INPUTS]}
    for name, policy_flags in flags.items():
        result = run_policylab(
            "train", *policy_flags, f"--dataset.root={recorded_pusht}", f"--output_dir={out / name}",
            "--training.steps=4", "--training.batch_size=4", "--training.log_freq=1",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return {name: out / name for name in flags}


def test_eval_writes_eval_info_and_videos_for_a_camera_policy(runs, tmp_path):
    out = tmp_path / "eval"
    result = run_policylab(
        "eval", f"--policy.path={runs['act']}/checkpoints/last", "--env.type=pusht", "--eval.n_episodes=3",
        "--eval.batch_size=2", "--eval.n_videos=1", SHORT_EPISODES, "--seed=11", f"--output_dir={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "eval_info.json").read_text())
    assert set(AGGREGATED_KEYS) <= set(info["aggregated"])
    assert [e["seed"] for e in info["per_episode"]] == [11, 12, 13]
    assert all(1 <= e["steps"] <= 15 for e in info["per_episode"])
    assert info["aggregated"]["avg_steps"] == pytest.approx(sum(e["steps"] for e in info["per_episode"]) / 3)
    (video,) = info["video_paths"]
    assert Path(video).parent == out / "videos" and video in result.stdout
    with av.open(video) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == info["per_episode"][0]["steps"] + 1  # the reset frame, then one per step
    height, width, _ = frames[0].shape  # the square render with the camera frame the policy saw beside it
    assert width == height + 96 * (height // 96)
    assert "success rate" in result.stdout and str(out / "eval_info.json") in result.stdout


def test_eval_switches_the_diffusion_sampler_of_a_trained_checkpoint(runs, tmp_path):
    out = tmp_path / "ddim"
    result = run_policylab(
        "eval", f"--policy.path={runs['diffusion']}", "--policy.noise_scheduler_type=DDIM",
        "--policy.num_inference_steps=3", "--eval.n_episodes=1", "--eval.n_videos=0", SHORT_EPISODES,
        f"--output_dir={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "eval_info.json").read_text())["policy"]["config"]
    assert (config["noise_scheduler_type"], config["num_inference_steps"]) == ("DDIM", 3)


def test_eval_errors_name_the_problem(runs, tmp_path):
    typo = run_policylab("eval", f"--policy.path={runs['diffusion']}", "--policy.num_inference_step=3")
    assert typo.returncode == 2 and "did you mean --policy.num_inference_steps" in typo.stderr
    missing = run_policylab("eval", f"--policy.path={tmp_path}/nothing")
    assert (
        missing.returncode == 1 and "no config.json" in missing.stderr and "Traceback" not in missing.stderr
    )

    wrist = ACTConfig(
        input_shapes={"observation.images.wrist": [3, 96, 96], "observation.state": [2]},
        output_shapes={"action": [2]}, dim_model=16, n_heads=2, dim_feedforward=16, chunk_size=2, n_action_steps=2,
        latent_dim=2, n_vae_encoder_layers=1, n_encoder_layers=1, pretrained_backbone=False,
    )  # fmt: skip
    stats = LeRobotDataset(
        root=json.loads((runs["act"] / "train_config.json").read_text())["dataset"]["root"]
    )
    stats = {**stats.meta.stats, "observation.images.wrist": stats.meta.stats["observation.image"]}
    ACTPolicy(wrist, dataset_stats=stats).save_pretrained(tmp_path / "wrist")
    unprovidable = run_policylab("eval", f"--policy.path={tmp_path / 'wrist'}", "--eval.n_episodes=1")
    assert unprovidable.returncode == 1 and "observation.images.wrist" in unprovidable.stderr
    assert "Traceback" not in unprovidable.stderr


@pytest.mark.parametrize(
    "command,flag,message",
    [
        ("compare", "--eval.n_episodes=0", "--eval.n_episodes must be at least 1, got 0"),
        ("plot", "--plot.n_samples=0", "--plot.n_samples must be at least 1, got 0"),
        ("bench", "--sweep.n_episodes=0", "--sweep.n_episodes must be at least 1, got 0"),
        ("eval", "--eval.batch_size=0", "--eval.batch_size must be at least 1, got 0"),
    ],
)
def test_values_that_cannot_work_are_one_line_before_any_work(runs, tmp_path, command, flag, message):
    path = f"--policies={runs['act']}" if command == "compare" else f"--policy.path={runs['act']}"
    result = run_policylab(command, path, flag, f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and result.stderr == f"policylab {command}: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_cannot_be_made_is_refused_before_the_evaluation(runs, tmp_path):
    (tmp_path / "file").write_text("")
    result = run_policylab("eval", f"--policy.path={runs['act']}", f"--output_dir={tmp_path / 'file/eval'}")
    assert result.returncode == 2 and "cannot create it" in result.stderr and "eval:" not in result.stdout


def test_bench_times_each_diffusion_sampler_on_the_same_weights(runs, tmp_path):
    result = run_policylab(
        "bench", f"--policy.path={runs['diffusion']}", "--bench.samplers=[DDPM-20,DDIM-4]", "--bench.n_calls=4",
        "--bench.warmup=1", "--bench.control_steps=12", f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "bench_info.json").read_text())
    assert info["parameters"] == sum(
        p.numel() for p in PreTrainedPolicy.from_pretrained(runs["diffusion"]).parameters()
    )
    ddpm, ddim = info["variants"]["DDPM-20"], info["variants"]["DDIM-4"]
    for variant in (ddpm, ddim):
        chunk, step = variant["chunk_call_ms"], variant["select_action_ms"]
        assert chunk["n"] == 4 and step["n"] == 12 and 0 < chunk["p50"] <= chunk["p95"] <= chunk["max"]
        assert step["mean"] < chunk["mean"]  # the model runs once per n_action_steps control steps
        assert variant["peak_memory_mb"] > 0
    assert ddpm["gflops_per_chunk_call"] == pytest.approx(5 * ddim["gflops_per_chunk_call"], rel=0.01)
    assert "DDPM-20" in result.stdout and "DDIM-4" in result.stdout

    bad = run_policylab("bench", f"--policy.path={runs['diffusion']}", "--bench.samplers=[EULER-3]")
    assert bad.returncode == 2 and "EULER-3" in bad.stderr and "TYPE-STEPS" in bad.stderr


def test_bench_compiles_on_request_and_times_the_compiling_call_apart(runs, tmp_path):
    result = run_policylab(
        "bench", f"--policy.path={runs['diffusion']}", "--bench.samplers=[DDIM-2]", "--bench.compile=true",
        "--bench.n_calls=2", "--bench.warmup=1", "--bench.control_steps=4", f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    variant = json.loads((tmp_path / "bench_info.json").read_text())["variants"]["DDIM-2"]
    assert variant["compile_s"] * 1000 > variant["chunk_call_ms"]["max"]
    assert "compiled (first call" in result.stdout


def test_plot_writes_pngs_of_the_documented_size(runs, tmp_path):
    result = run_policylab(
        "plot", f"--policy.path={runs['act']}", "--plot.n_samples=3", f"--output_dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "policy_comparison.png") as image:
        assert image.format == "PNG" and image.size == (
            round(3 * COLUMN_INCHES * DPI),
            round(2 * ROW_INCHES * DPI),
        )
    with Image.open(tmp_path / "training_curves.png") as image:
        width, height = CURVE_PANEL_INCHES
        assert image.format == "PNG" and image.size == (round(2 * width * DPI), round(height * DPI))
    assert str(tmp_path / "policy_comparison.png") in result.stdout


def test_visualize_action_predictions_takes_a_plain_dataset(runs, recorded_pusht, tmp_path):
    policy = PreTrainedPolicy.from_pretrained(runs["diffusion"])
    path = visualize_action_predictions(
        policy, LeRobotDataset(root=recorded_pusht), n_samples=2, path=tmp_path / "c.png"
    )
    with Image.open(path) as image:
        assert image.size == (round(2 * COLUMN_INCHES * DPI), round(2 * ROW_INCHES * DPI))


def test_compare_reports_both_policies_and_reuses_its_measurements(runs, tmp_path):
    args = ["compare", "--policies", str(runs["act"]), str(runs["diffusion"]), "--eval.n_episodes=2",
            "--eval.n_videos=1", SHORT_EPISODES, "--bench.n_calls=2", "--bench.warmup=1",
            "--bench.control_steps=4", "--bench.samplers=[DDIM-2]", f"--output_dir={tmp_path}"]  # fmt: skip
    first = run_policylab(*args)
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "report.md").read_text()
    assert "| act (act) | " in report and "| diffusion (diffusion) | " in report
    assert "act (act)" in first.stdout and "diffusion (diffusion)" in first.stdout
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:video/mp4;base64,") == 2 and page.count("data:image/png;base64,") == 4
    eval_info = tmp_path / "act/eval_info.json"
    measured = eval_info.stat().st_mtime_ns
    assert run_policylab(*args).returncode == 0
    assert eval_info.stat().st_mtime_ns == measured  # same checkpoint and settings: not measured again


def test_distill_writes_a_student_that_eval_bench_and_compare_take_as_they_are(runs, tmp_path):
    student = tmp_path / "student"
    steps = [
        "--training.steps=4",
        "--training.batch_size=4",
        "--training.save_freq=2",
        "--training.log_freq=1",
    ]
    result = run_policylab(
        "distill", f"--teacher.path={runs['diffusion']}", f"--output_dir={student}", *steps
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((student / "checkpoints/last/pretrained_model/config.json").read_text())
    assert (config["noise_scheduler_type"], config["num_inference_steps"]) == ("LCM", 1)
    logged = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert {"consistency_loss", "dsm_loss"} <= set(logged[0])
    longer = run_policylab("distill", f"--output_dir={student}", "--resume=true", "--training.steps=6")
    assert longer.returncode == 0, longer.stderr  # the teacher and settings come from distill_config.json
    assert (student / "checkpoints/last").resolve().name == "000006"

    bench = run_policylab("bench", f"--policy.path={student}", "--bench.n_calls=2", "--bench.warmup=1",
                          "--bench.control_steps=4", f"--output_dir={tmp_path / 'bench'}")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert list(json.loads((tmp_path / "bench/bench_info.json").read_text())["variants"]) == [
        "LCM-1",
        "LCM-3",
    ]
    compare = run_policylab(
        "compare", "--policies", str(runs["act"]), str(student), "--eval.n_episodes=2", "--eval.n_videos=1",
        SHORT_EPISODES, "--bench.n_calls=2", "--bench.warmup=1", "--bench.control_steps=4",
        f"--output_dir={tmp_path / 'report'}",
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr
    report = (tmp_path / "report/report.md").read_text()
    assert "| student (diffusion) | " in report and "LCM-1" in report and "LCM-3" in report


def test_distill_starts_a_smaller_student_from_another_trained_network_that_acts_like_the_teacher(
    runs, recorded_pusht, tmp_path
):
    def train_small(name: str, *flags: str) -> Path:
        result = run_policylab(
            "train", *TINY_DIFFUSION_FLAGS, KEYPOINT_INPUTS, "--policy.down_dims=[16]", *flags,
            f"--dataset.root={recorded_pusht}", f"--output_dir={tmp_path / name}", "--training.steps=2",
            "--training.batch_size=4",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return tmp_path / name

    small = train_small("small", "--policy.n_res_blocks=1")
    result = run_policylab("distill", f"--teacher.path={runs['diffusion']}", f"--student.path={small}",
                           f"--output_dir={tmp_path / 'student'}", "--training.steps=2", "--training.batch_size=4",
                           "--distill.teacher_steps=10")  # fmt: skip
    assert result.returncode == 0, result.stderr
    student = PreTrainedPolicy.from_pretrained(tmp_path / "student/checkpoints/last/pretrained_model")
    assert (student.config.down_dims, student.config.n_res_blocks) == ([16], 1)
    assert student.config.noise_scheduler_type == "LCM"

    other_horizon = train_small("other_horizon", "--policy.horizon=8", "--policy.n_action_steps=4")
    refused = run_policylab("distill", f"--teacher.path={runs['diffusion']}", f"--student.path={other_horizon}",
                            f"--output_dir={tmp_path / 'refused'}")  # fmt: skip
    assert refused.returncode == 2 and "has horizon=8 and the teacher 16" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_distill_refuses_a_teacher_that_is_not_diffusion(runs, tmp_path):
    result = run_policylab("distill", f"--teacher.path={runs['act']}", f"--output_dir={tmp_path / 's'}")
    assert result.returncode == 2
    assert "is an 'act' policy; distill takes a diffusion one" in result.stderr


def test_distill_names_teacher_steps_beyond_the_noise_levels(runs, tmp_path):
    result = run_policylab("distill", f"--teacher.path={runs['diffusion']}", "--distill.teacher_steps=11",
                           f"--output_dir={tmp_path / 's'}")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "teacher_steps=11 must be in 1..original_inference_steps=10" in result.stderr


def test_bench_sweep_times_and_evaluates_each_setting_and_plots_speed_against_quality(runs, tmp_path):
    result = run_policylab(
        "bench", f"--policy.path={runs['diffusion']}", "--sweep.steps=[1,2,500]", "--sweep.samplers=[DDIM]",
        "--sweep.n_episodes=1", "--bench.n_calls=2", "--bench.warmup=1", "--bench.control_steps=4",
        f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep = json.loads((tmp_path / "bench_info.json").read_text())["sweep"]
    assert list(sweep) == ["DDIM-1", "DDIM-2"]  # 500 steps exceed the 20-step schedule: skipped
    for row in sweep.values():
        assert {"success_rate", "success_rate_ci95", "avg_max_reward", "chunk_call_ms_p50"} <= set(row)
    with Image.open(tmp_path / "speed_quality.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    act = run_policylab("bench", f"--policy.path={runs['act']}", "--sweep.steps=[1]")
    assert act.returncode == 2 and "no sampler to sweep (diffusion only)" in act.stderr
