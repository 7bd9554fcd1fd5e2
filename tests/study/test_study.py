"""A tiny study through the real CLI: every row of the table, for both policies, in a valid HTML page."""

import json
from html.parser import HTMLParser

import pytest

from helpers import run_policylab
from policylab.report.study import ROWS

pytestmark = pytest.mark.slow
POLICY = {"input_shapes": {"observation.state": [2], "observation.environment_state": [16]}}
TINY = {
    "act": {**POLICY, "type": "act", "dim_model": 32, "n_heads": 2, "dim_feedforward": 64, "n_encoder_layers": 1,
            "use_vae": False, "chunk_size": 5, "n_action_steps": 5},
    "diffusion": {**POLICY, "type": "diffusion", "down_dims": [16, 32], "diffusion_step_embed_dim": 16, "n_groups": 4,
                  "num_train_timesteps": 20, "prediction_type": "sample"},
}  # fmt: skip


class Cells(HTMLParser):
    """The text of every table cell, and whether every opened tag was closed."""

    VOID = {"meta", "img", "br"}

    def __init__(self):
        super().__init__()
        self.open, self.cells, self.text = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        if tag in ("td", "th"):
            self.text = ""

    def handle_endtag(self, tag):
        assert self.open.pop() == tag
        if tag in ("td", "th"):
            self.cells.append(self.text)
            self.text = None

    def handle_data(self, data):
        if self.text is not None:
            self.text += data


def test_a_tiny_study_measures_every_row_and_resumes(tmp_path):
    presets = {}
    for name, policy in TINY.items():
        presets[name] = tmp_path / f"{name}.json"
        presets[name].write_text(
            json.dumps({"policy": policy, "training": {"batch_size": 8, "lr": 1e-3, "log_freq": 1}})
        )
    out = tmp_path / "study"
    flags = [
        f"--study.act_preset={presets['act']}", f"--study.diffusion_preset={presets['diffusion']}",
        "--study.steps_per_run=4", "--study.n_seeds=2", "--study.n_checkpoints=2", "--dataset.num_episodes=2",
        "--eval.n_episodes=2", "--eval.max_episode_steps=10", "--eval.batch_size=2", "--tune.n_trials=2",
        "--tune.steps=2", "--tune.n_episodes=1", "--probe.n_states=1", "--probe.n_demos=4", "--probe.n_samples=3",
        "--probe.horizon=16", "--probe.radius_px=1", "--bench.n_calls=2", "--bench.control_steps=4",
        f"--output_dir={out}",
    ]  # fmt: skip
    result = run_policylab("study", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    study = json.loads((out / "study.json").read_text())
    assert len(study["runs"]) == 8  # 2 policies x 2 kinds of demonstrations x 2 seeds
    # each run trains in a process of its own and reports that process's peak resident set
    assert all(
        r["memory_kind"] == "process_rss" and r["train_peak_memory_mb"] > 100 for r in study["runs"].values()
    )
    assert all(len(points) == 2 and points[-1]["step"] == 4 for points in study["curves"].values())
    assert [row[""] for row in study["table"]] == list(ROWS)
    for row in study["table"]:
        assert row["ACT"] and row["Diffusion"] and "not measured" not in row["ACT"] + row["Diffusion"], row
    assert (
        json.loads((out / "measurements" / "probe.json").read_text())["horizon"] == 5
    )  # ACT predicts 5 steps
    assert "DDPM-20" in study["table"][0]["Diffusion"] and "DDIM-10" in study["table"][0]["Diffusion"]

    page = Cells()
    page.feed((out / "study.html").read_text())
    assert page.open == [] and set(ROWS) <= set(page.cells)
    assert (out / "learning_curves.png").stat().st_size > 0 and (out / "multimodality.png").stat().st_size > 0
    assert "Reproduce: `policylab study" in (out / "study.md").read_text()

    again = run_policylab("study", *flags)  # everything is there: nothing is trained or measured again
    assert again.returncode == 0 and "training:" not in again.stderr
    assert json.loads((out / "study.json").read_text())["table"] == study["table"]
