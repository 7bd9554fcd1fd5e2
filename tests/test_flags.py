import json
from pathlib import Path

import pytest

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


def test_typo_suggests_the_flag_and_lists_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(RecordConfig, ["--dataset.num_episode=3"], "policylab record")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown flag --dataset.num_episode; did you mean --dataset.num_episodes" in err
    assert "--dataset.root" in err and "--env.obs_type" in err


def test_bad_value_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse_flags(RecordConfig, ["--seed=abc"], "policylab record")
    assert "--seed" in capsys.readouterr().err


def test_bad_choice_lists_choices(capsys):
    with pytest.raises(SystemExit):
        parse_flags(RecordConfig, ["--env.type=aloha"], "policylab record")
    assert "pusht" in capsys.readouterr().err


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


def test_unreadable_config_path_is_one_line_naming_the_flag(tmp_path, capsys):
    from policylab.training import TrainConfig

    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(TrainConfig, [f"--config_path={tmp_path / 'bad.json'}"], "policylab train")
    assert exit_info.value.code == 2 and "--config_path=" in capsys.readouterr().err


def test_a_nested_flag_keeps_the_other_defaults_of_its_section():
    from policylab.training.distill import DistillConfig

    config = parse_flags(DistillConfig, ["--teacher.path=x", "--training.lr=3e-4"], "policylab distill")
    assert (config.training.lr, config.training.steps, config.training.batch_size) == (3e-4, 2000, 64)
