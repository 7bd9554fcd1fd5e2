"""Every maintained benchmark (benchmarks/README.md) runs at tiny size and prints one JSON object."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def run(script: str, *args: str, **kwargs) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_every_script_is_listed_and_every_listed_script_exists():
    listed = set(re.findall(r"^\| `(\w+\.py)` \|", (BENCHMARKS / "README.md").read_text(), flags=re.M))
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {
        "vs_lerobot_worker.py"
    }  # a worker of vs_lerobot.py
    assert listed == scripts


def test_expert():
    report = run("expert.py", "--episodes", "2", "--workers", "1")
    assert report["success_rate"] == 1.0 and report["mean_length"] > 0


def test_env_step():
    report = run("env_step.py", "--steps", "5")
    assert all(isinstance(v, (int, float, bool, dict)) for v in report.values())


def test_param_counts():
    report = run("param_counts.py")
    assert report["act_lerobot_default"]["total_M"] == pytest.approx(51.59, abs=0.01)
    assert {f"preset {p.stem}" for p in (BENCHMARKS.parent / "configs/train").glob("*.json")} <= set(report)


def test_dataloader(recorded_pusht):
    report = run("dataloader.py", "--root", str(recorded_pusht), "--min-seconds", "0.2", "--batch-size", "8")
    assert report


def test_learning_curve(recorded_pusht, tmp_path):
    report = run(
        "learning_curve.py", "--policies", "act", "--dataset-root", str(recorded_pusht), "--output-dir",
        str(tmp_path / "curve"), "--episodes", "1", "--save-freq", "2", "--training.steps=4",
        "--training.batch_size=8",
    )  # fmt: skip
    assert [point["step"] for point in report["curves"]["act"]] == [2, 4]
    assert (tmp_path / "curve/learning_curve.png").is_file()


def test_image_encoders(recorded_pusht, tmp_path):
    variants = ["diffusion_small_cnn_cached", "act_small_cnn_64_frozen"]
    report = run(
        "image_encoders.py", "--dataset-root", str(recorded_pusht), "--output-dir", str(tmp_path), "--variants",
        ",".join(variants), "--steps", "2", "--log-freq", "1", "--n-calls", "1", "--batch-size", "4",
    )  # fmt: skip
    assert list(report["variants"]) == variants
    assert all(v["samples_per_s"] > 0 and v["chunk_call_ms"] > 0 for v in report["variants"].values())
    frame_cache = report["variants"]["diffusion_small_cnn_cached"]["frame_cache_control_step_ms"]
    assert set(frame_cache) == {f"n_action_steps_{n}_{c}" for n in (8, 1) for c in ("cached", "uncached")}


def test_gpu_check_dry_runs_on_a_cpu(tmp_path):
    report = run(
        "gpu_check.py", "--work-dir", str(tmp_path), "--device", "cpu", "--episodes", "1", "--configs"
    )
    assert report["device"] == "cpu"  # CPU against itself: every difference is 0
    assert (
        report["act_agreement"]["chunk_vae"] == 0.0 and report["diffusion_agreement"]["sample_DDIM-10"] == 0.0
    )


@pytest.mark.interop
def test_vs_lerobot_at_tiny_size(tmp_path):
    python = os.environ.get("LEROBOT_V21_PYTHON")
    if not python:
        pytest.skip("set LEROBOT_V21_PYTHON to a python with LeRobot 0.3.2 installed")
    report = run(
        "vs_lerobot.py", "--lerobot-venv", str(Path(python).parents[1]), "--dataset-root", str(tmp_path / "tiny"),
        "--episodes", "5", "--threads", "1", "--steps", "2", "--warmup", "1", "--debug-batch-size", "2",
        "--infer-calls", "2", "--infer-warmup", "1", "--loader-seconds", "0.5",
    )  # fmt: skip
    assert report
