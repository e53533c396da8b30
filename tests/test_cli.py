"""The ``aime-rl`` command: help for every command, config handling, and the quick demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aime_rl.cli import COMMANDS, EXPERIMENTS, build_config, main, make_parser
from aime_rl.utils.tensorboard import read_event_images


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_the_installed_command_answers_help():
    out = subprocess.run(
        [sys.executable, "-m", "aime_rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert all(command in out.stdout for command in COMMANDS)


def test_flags_override_the_toml_file(tmp_path):
    config_file = tmp_path / "exp.toml"
    config_file.write_text('name = "x"\npreset = "small"\nagent_steps = 100\n')
    args = make_parser().parse_args(["train-agent", "--config", str(config_file), "--agent-steps", "7"])
    config = build_config(args)
    assert (config.name, config.preset, config.agent_steps) == ("x", "small", 7)


def test_unknown_settings_in_a_config_file_are_an_error(tmp_path, capsys):
    config_file = tmp_path / "exp.toml"
    config_file.write_text("no_such_setting = 1\n")
    assert main(["collect", "--config", str(config_file)]) == 2
    assert "no_such_setting" in capsys.readouterr().err


def test_a_missing_config_file_is_an_error(tmp_path, capsys):
    assert main(["collect", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_train_agent_without_a_model_says_what_to_do(tmp_path, capsys):
    assert main(["train-agent", "--runs-dir", str(tmp_path), "--name", "empty"]) == 2
    assert "train-tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_runs_the_whole_pipeline(tmp_path):
    assert main(["demo", "--quick", "--logdir", str(tmp_path)]) == 0
    run = tmp_path / "demo-quick"
    report = json.loads((run / "report.json").read_text())
    assert {"agent_return_mean", "random_return_mean", "perception"} <= set(report)
    assert report["perception"]["tokenizer"]["psnr"] > 0
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "agent" / "agent.zip").is_file()
    assert (run / "agent" / "observation_normalization.json").is_file()
    assert (run / "report.md").read_text().startswith("# aime-rl report")
    images = read_event_images(run / "context_model")
    assert any(tag.startswith("rollout/") and blobs[0].startswith(b"GIF89a") for tag, blobs in images.items())


@pytest.mark.slow
def test_world_model_and_an_agent_trained_in_imagination(tmp_path):
    quick = ["--config", str(EXPERIMENTS / "quick.toml"), "--runs-dir", str(tmp_path)]
    assert main(["collect", *quick]) == 0
    assert main(["train-tokenizer", *quick, "--tokenizer-steps", "5"]) == 0
    assert main(["train-perceiver", *quick, "--context-steps", "5"]) == 0
    assert main(["train-world-model", *quick, "--world-model-steps", "5"]) == 0
    run = tmp_path / "demo-quick"
    assert (run / "world_model" / "world_model" / "model.safetensors").is_file()
    assert main(["train-agent", *quick, "--in-imagination", "--agent-steps", "128"]) == 0
    assert (run / "agent" / "observation_normalization.json").is_file()  # imagined contexts, standardised
    assert main(["evaluate", *quick]) == 0
    assert json.loads((run / "report.json").read_text())["episodes"] == 2
