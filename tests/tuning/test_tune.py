"""policylab tune through the real CLI on the recorded episodes, with tiny models and short episodes."""

import csv
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from PIL import Image

from helpers import KEYPOINT_INPUTS, TINY_ACT_FLAGS, run_policylab
from policylab.errors import ConfigError
from policylab.flags import parse_flags
from policylab.training import TrainConfig
from policylab.tuning.space import parse_space

SPACE = '{"training.lr": {"low": 1e-4, "high": 1e-2, "log": true}, "policy.kl_weight": [1, 10, 100]}'


def tune_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "tune", *TINY_ACT_FLAGS, KEYPOINT_INPUTS, f"--dataset.root={root}", f"--output_dir={out}",
        "--training.steps=4", "--training.batch_size=4", "--training.save_freq=2", "--env.max_episode_steps=10",
        "--eval.n_episodes=2", "--eval.batch_size=2", f"--tune.space={SPACE}", "--tune.objective=avg_max_reward",
        *extra,
    ]  # fmt: skip


def trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="policylab", storage=f"sqlite:///{out}/study.db").get_trials()


@pytest.mark.slow
def test_a_study_records_trials_reports_the_best_and_draws_plots(recorded_pusht, tmp_path):
    out = tmp_path / "study"
    result = run_policylab(*tune_args(recorded_pusht, out, "--tune.n_trials=3", "--tune.n_evaluations=2"))
    assert result.returncode == 0, result.stderr

    finished = trials(out)
    assert [t.number for t in finished] == [0, 1, 2]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in finished)
    rows = list(csv.DictReader((out / "tune_results.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {"training.lr", "policy.kl_weight", "value"} <= set(rows[0])
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    for t in complete:  # two evaluations each: at step 2 (for the pruner) and at the end
        assert sorted(t.intermediate_values) == [2, 4]
        assert t.value == t.intermediate_values[4]
        assert Path(t.user_attrs["output_dir"], "checkpoints/last/pretrained_model").is_dir()
    assert f"Best: trial {best.number}" in (out / "tune_results.md").read_text()

    command = shlex.split((out / "best_train_command.txt").read_text())
    assert command[:2] == ["policylab", "train"]
    config = parse_flags(TrainConfig, command[2:], "check")  # the printed command is a valid train command
    assert config.training.lr == pytest.approx(best.params["training.lr"])
    assert config.policy.kl_weight == best.params["policy.kl_weight"]
    for name in ("tune_history.png", "tune_importance.png", "tune_slices.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 200

    again = run_policylab(*tune_args(recorded_pusht, out, "--tune.n_trials=3"))  # already done: no new trial
    assert again.returncode == 0, again.stderr
    assert len(trials(out)) == 3


@pytest.mark.slow
def test_a_trial_below_the_median_at_an_intermediate_evaluation_is_pruned(recorded_pusht, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    study = optuna.create_study(
        study_name="policylab", storage=f"sqlite:///{out}/study.db", direction="maximize"
    )
    study.add_trial(  # an earlier trial with perfect coverage at step 2: any real trial is below it
        optuna.trial.create_trial(
            params={"training.lr": 1e-3, "policy.kl_weight": 10},
            distributions={
                "training.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                "policy.kl_weight": optuna.distributions.CategoricalDistribution([1, 10, 100]),
            },
            intermediate_values={2: 1.0, 4: 1.0},
            value=1.0,
        )
    )
    result = run_policylab(
        *tune_args(
            recorded_pusht, out, "--tune.n_trials=2", "--tune.n_evaluations=2", "--tune.prune_after_trials=1"
        )
    )
    assert result.returncode == 0, result.stderr
    pruned = trials(out)[1]
    assert pruned.state.name == "PRUNED"
    assert list(pruned.intermediate_values) == [2]  # stopped at the first evaluation, not trained to step 4
    assert "pruned at step 2" in (out / "tune_results.md").read_text()


@pytest.mark.slow
def test_a_killed_study_resumes_without_repeating_finished_trials(recorded_pusht, tmp_path):
    out = tmp_path / "study"
    # trials of ~2 s: time to catch one running and kill it
    args = tune_args(recorded_pusht, out, "--tune.n_trials=3", "--tune.heartbeat_seconds=1", "--tune.n_evaluations=1",
                     "--training.steps=300", "--training.save_freq=300")  # fmt: skip
    log = (tmp_path / "first_run.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "policylab.cli", *args], stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        # trial 1's folder: the study's tables exist (reading them earlier races their creation)
        states = [t.state.name for t in trials(out)] if (out / "trials/0001").exists() else []
        if states.count("COMPLETE") == 1 and states.count("RUNNING") == 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, (tmp_path / "first_run.log").read_text()[-3000:]
    before = {t.number: t for t in trials(out)}
    killed = next(t for t in before.values() if t.state.name == "RUNNING")
    time.sleep(2.5)  # twice the heartbeat: the killed trial is now stale

    result = run_policylab(*args)
    assert result.returncode == 0, result.stderr
    after = {t.number: t for t in trials(out)}
    complete = [t for t in after.values() if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    first = next(t for t in before.values() if t.state.name == "COMPLETE")
    assert after[first.number].datetime_complete == first.datetime_complete  # not run again
    assert after[killed.number].state.name == "FAIL"
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params  # rerun once with the same settings


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(recorded_pusht, tmp_path):
    out = tmp_path / "study"
    # trials long enough (~2 s) that the second worker, started by the first, is up (~5 s) before they all ran
    result = run_policylab(*tune_args(recorded_pusht, out, "--tune.n_trials=6", "--tune.n_workers=2",
                                      "--training.steps=400", "--training.save_freq=400"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    done = trials(out)
    numbers = [t.number for t in done]
    assert len(numbers) == len(set(numbers)) >= 6  # a worker may start one more trial as the other ends
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in done)
    assert {t.user_attrs["worker"] for t in done} == {0, 1}
    assert len(list(csv.DictReader((out / "tune_results.csv").open()))) == len(done)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ('{"training.lr": {"low": 1e-3}}', "parameter 'training.lr': a range needs both low and high"),
        ('{"training.lr": {"low": 1e-2, "high": 1e-3}}', "parameter 'training.lr': low (0.01) must be below"),
        ('{"policy.chunk_size": []}', "parameter 'policy.chunk_size' has an empty list"),
        (
            '{"training.lr": {"low": 0, "high": 1, "log": true}}',
            "parameter 'training.lr': a log range needs low > 0",
        ),
        ('{"training.lr": "1e-3"}', "parameter 'training.lr': expected a list of choices"),
        ('["training.lr"]', "must be a non-empty JSON object"),
        ("{training.lr: 1}", "not valid JSON"),
    ],
)
def test_a_malformed_search_space_names_the_parameter(space, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(space, "act")


def test_unknown_or_unusable_parameters_fail_before_any_trial(recorded_pusht, tmp_path):
    typo = run_policylab(
        *tune_args(recorded_pusht, tmp_path / "a", '--tune.space={"policy.kl_weigth": [1, 10]}')
    )
    assert typo.returncode == 2
    assert (
        "parameter 'policy.kl_weigth' is not a `policylab train` flag; did you mean policy.kl_weight"
        in typo.stderr
    )
    wrong_policy = run_policylab(
        *tune_args(recorded_pusht, tmp_path / "b", '--tune.space={"policy.down_dims": [[8, 16]]}')
    )
    assert wrong_policy.returncode == 2 and "parameter 'policy.down_dims'" in wrong_policy.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    no_steps = run_policylab("tune", *TINY_ACT_FLAGS, KEYPOINT_INPUTS, f"--dataset.root={recorded_pusht}")
    assert no_steps.returncode == 2 and "needs --training.steps" in no_steps.stderr


def test_the_default_spaces_parse_with_the_cpu_presets():
    presets = Path(__file__).parents[2] / "configs/train"
    for policy in ("act", "diffusion"):
        space = parse_space(None, policy)
        preset = f"--config_path={presets / f'{policy}_pusht_keypoints_cpu.json'}"
        for name, spec in space.items():
            for value in spec if isinstance(spec, list) else [spec["low"], spec["high"]]:
                flag = f"--{name}={json.dumps(value, separators=(',', ':'))}"
                parse_flags(TrainConfig, [preset, flag], "check")  # raises on a value the preset cannot take
