import json
from pathlib import Path

import pytest

from helpers import run_policylab
from policylab.errors import FlagError
from policylab.experts.record import RecordConfig
from policylab.flags import format_help, list_flags, parse_flags


def test_dotted_flags_parse_into_nested_configs():
    config = parse_flags(
        RecordConfig,
        ["--env.type=pusht", "--dataset.root=/tmp/x", "--dataset.num_episodes=7", "--seed=3"],
        "t",
    )
    assert config.dataset.root == "/tmp/x" and config.dataset.num_episodes == 7 and config.seed == 3
    assert config.env.type == "pusht"


def test_typo_suggests_the_closest_flags_and_points_to_help():
    with pytest.raises(FlagError) as error:
        parse_flags(RecordConfig, ["--dataset.num_episode=3"], "policylab record")
    assert error.value.exit_status == 2
    message = str(error.value)
    assert message.startswith("unknown flag --dataset.num_episode; did you mean --dataset.num_episodes")
    assert message.endswith("? see policylab record --help") and "--env.obs_type" not in message


def test_bad_value_names_the_flag():
    with pytest.raises(FlagError, match="--seed"):
        parse_flags(RecordConfig, ["--seed=abc"], "policylab record")


def test_bad_choice_lists_choices():
    with pytest.raises(FlagError, match=r"^--env.type=aloha: choose one of pusht$"):
        parse_flags(RecordConfig, ["--env.type=aloha"], "policylab record")


def test_a_wrong_policy_type_is_one_line_through_the_cli():
    result = run_policylab("train", "--policy.type=actt", "--dataset.root=x", "--training.steps=1")
    assert result.returncode == 2
    assert result.stderr == (
        "policylab train: error: --policy.type=actt: did you mean act? choose one of act, diffusion\n"
    )


def test_a_bad_value_is_one_line_without_argparse_usage():
    result = run_policylab("record", "--dataset.num_episodes=many")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "--dataset.num_episodes" in result.stderr and "usage" not in result.stderr


def test_help_lists_every_flag_with_default():
    text = format_help("policylab record", RecordConfig)
    for flag in list_flags(RecordConfig()):
        assert f"--{flag.name}=" in text
    for flag in [
        "--dataset.repo_id=pusht",
        "--dataset.root=None",
        "--dataset.num_episodes=50",
        "--seed=0",
        "--env.type=pusht",
        "--num_workers=2",
    ]:
        assert flag in text
    assert "number of successful episodes to record" in text


@pytest.mark.parametrize("preset", sorted((Path(__file__).parents[1] / "configs/train").glob("*.json")))
def test_shipped_train_presets_parse_and_command_line_flags_override_them(preset):
    from policylab.training import TrainConfig

    config = parse_flags(TrainConfig, [f"--config_path={preset}", "--training.steps=7"], "policylab train")
    saved = json.loads(preset.read_text())
    assert config.policy.type == saved["policy"]["type"] and config.training.steps == 7
    assert config.training.batch_size == saved["training"]["batch_size"]
    assert config.policy.input_shapes == saved["policy"]["input_shapes"]


def test_unreadable_config_path_is_one_line_naming_the_flag(tmp_path):
    from policylab.training import TrainConfig

    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(FlagError, match="^--config_path=.*bad.json: not valid JSON"):
        parse_flags(TrainConfig, [f"--config_path={tmp_path / 'bad.json'}"], "policylab train")


def test_a_nested_flag_keeps_the_other_defaults_of_its_section():
    from policylab.training.distill import DistillConfig

    config = parse_flags(DistillConfig, ["--teacher.path=x", "--training.lr=3e-4"], "policylab distill")
    assert (config.training.lr, config.training.steps, config.training.batch_size) == (3e-4, 2000, 64)


@pytest.mark.parametrize(
    "given,other", [("--training.num_epochs=3", "steps"), ("--training.steps=9", "num_epochs")]
)
def test_a_run_length_on_the_command_line_replaces_the_presets(tmp_path, given, other):
    from policylab.cli import parse_train

    preset = tmp_path / "preset.json"
    preset.write_text(
        json.dumps(
            {"training": {"steps": 100, "num_epochs": None} if other == "steps" else {"num_epochs": 5}}
        )
    )
    config = parse_train([f"--config_path={preset}", given])
    name, value = given[len("--training.") :].split("=")
    assert getattr(config.training, name) == int(value) and getattr(config.training, other) is None
