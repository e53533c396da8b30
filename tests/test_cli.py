"""The ``aime-rl`` command's surface: help per command, settings layering, validation, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aime_rl.cli import COMMANDS, explicit_settings, main, make_parser
from aime_rl.experiments import experiment_path
from aime_rl.pipeline import Options, prepare
from aime_rl.pipeline.config import ADDED_SETTINGS

DEMO_PREDICTOR_KWARGS = {
    "embeddings_from_codes": True,
    "local_motion_frames": 3,
    "local_motion_context": True,
    "local_motion_horizon": 3,
    "local_motion_inputs": "pixels",
    "local_motion_history": True,
    "local_motion_lr_scale": 3.0,
    "num_latents": 8,
}
ATARI_PREDICTOR_KWARGS = {
    "motion_attention_bias": 0.0,
    "next_frame_samples": 1,
    "embeddings_from_codes": False,
    "local_motion_frames": 0,
    "local_motion_context": False,
    "local_motion_horizon": 1,
    "local_motion_inputs": "codes",
    "local_motion_history": False,
    "local_motion_lr_scale": 1.0,
    "num_latents": 16,
    "copy_logit": 3.0,
    "context_prediction_weight": 0.0,
    "frozen_embeddings": True,
}


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_defaults(command, capsys):
    text = help_text(command, capsys)
    assert "--config" in text and "--restart" in text and "default:" in text


def test_help_lists_only_the_commands_own_settings(capsys):
    collect = help_text("collect", capsys)
    assert "--collect-steps" in collect and "--tokenizer-steps" not in collect and "--algo" not in collect
    agent = help_text("train-agent", capsys)
    assert "--algo" in agent and "choices: ppo, a2c, dqn, sac" in agent and "--collect-steps" not in agent
    assert "--agent-kwarg" in agent and "--predictor-kwarg" not in agent
    assert "--predictor-kwarg" in help_text("train-context", capsys)


def test_help_gives_the_atari_recipes_default_where_it_differs(capsys):
    collect = help_text("collect", capsys)
    assert "(default: 32; an Atari game's: 80)" in collect  # --frame-size
    assert "(default: 16)" in collect  # --num-envs: the same under both recipes
    assert "an Atari game's: 96 unless --frame-size is given" in collect  # --frame-height


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("aime-rl ")


def test_the_installed_command_answers_help():
    out = subprocess.run(
        [sys.executable, "-m", "aime_rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert all(command in out.stdout for command in COMMANDS)


def test_flag_typos_are_not_taken_as_abbreviations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--collect-step", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--collect-step" in err and len(err.strip().splitlines()) == 1


def settings(argv: list[str]) -> dict:
    return explicit_settings(make_parser().parse_args(argv))


def test_flags_override_the_toml_file(tmp_path):
    config_file = tmp_path / "exp.toml"
    config_file.write_text('name = "x"\npreset = "small"\nagent_steps = 100\n')
    values = settings(["train-agent", "--config", str(config_file), "--agent-steps", "7"])
    assert (values["name"], values["preset"], values["agent_steps"]) == ("x", "small", 7)


def test_a_config_file_is_layered_on_the_defaults(tmp_path):
    config_file = tmp_path / "exp.toml"
    config_file.write_text('name = "x"\n[agent_kwargs]\ngamma = 0.9\n')
    explicit = settings(["collect", "--config", str(config_file), "--runs-dir", str(tmp_path)])
    config = prepare("collect", explicit, Options())[0]
    demo = experiment_path("demo").read_text()
    assert config.frame_size == 32 and "frame_size = 32" in demo  # the built-in experiment's value stays
    assert config.agent_kwargs["gamma"] == 0.9 and config.agent_kwargs["n_steps"] == 64  # merged key by key


def test_another_algorithm_starts_without_the_demos_ppo_settings(tmp_path):
    def new_run(*flags):  # the settings a first command would write (train-agent's flags, checked as collect)
        return prepare("collect", settings(["train-agent", *flags, "--runs-dir", str(tmp_path)]), Options())[
            0
        ]

    config = new_run("--algo", "dqn")
    assert config.algo == "dqn" and config.agent_kwargs == {}
    assert new_run("--algo", "a2c", "--agent-kwarg", "n_steps=8").agent_kwargs == {"n_steps": 8}
    assert new_run("--algo", "ppo").agent_kwargs["n_epochs"] == 10  # the demo's own algorithm keeps them


def test_agent_kwargs_from_the_command_line(tmp_path):
    values = settings(
        ["train-agent", "--agent-kwarg", "n_steps=16", "--agent-kwarg", "policy_kwargs={net_arch=[8]}"]
    )
    assert values["agent_kwargs"] == {"n_steps": 16, "policy_kwargs": {"net_arch": [8]}}


def test_predictor_kwargs_from_the_command_line_and_a_config_file_merge_key_by_key(tmp_path):
    config_file = tmp_path / "exp.toml"
    config_file.write_text("[predictor_kwargs]\nrecency_bias = 2.0\nmotion_attention_bias = 1.0\n")
    argv = ["train-context", "--config", str(config_file), "--predictor-kwarg", "motion_attention_bias=0"]
    assert settings(argv)["predictor_kwargs"] == {"recency_bias": 2.0, "motion_attention_bias": 0}


@pytest.mark.parametrize(
    "kwarg, named",
    [
        ("num_latentz=4", "num_latentz"),
        ('motion_attention_bias="high"', "motion_attention_bias"),
        ("context_pooling=max", "context_pooling"),
        ("next_frame_samples=0", "next_frame_samples"),
    ],
)
def test_a_bad_predictor_kwarg_is_refused_before_anything_is_written(tmp_path, capsys, kwarg, named):
    code, err = run_cli(["demo", "--runs-dir", str(tmp_path / "r"), "--predictor-kwarg", kwarg], capsys)
    assert code == 2 and named in err and "predictor_kwargs" in err and not (tmp_path / "r").exists()


def test_the_experiment_files_are_package_data():
    assert experiment_path("demo").is_file() and experiment_path("quick").is_file()


def test_the_atari_recipe_is_a_shipped_experiment(tmp_path):
    explicit = settings(["collect", "--config", "atari", "--runs-dir", str(tmp_path)])
    config = prepare("collect", explicit, Options())[0]
    assert config.env == "pong" and config.frame_shape == (96, 80)
    assert (config.collect_steps, config.tokenizer_steps, config.context_steps) == (12000, 1200, 300)
    assert config.decoder_steps == 400  # not the demo's 800, which it is laid over
    assert config.predictor_kwargs == ATARI_PREDICTOR_KWARGS
    assert config.preset == "small"  # what the recipe does not set comes from the built-in experiment


def new_run_settings(tmp_path, *argv: str):
    """The settings a first ``collect`` with these flags would write (nothing is written)."""
    args = make_parser().parse_args(["collect", *argv, "--runs-dir", str(tmp_path)])
    return prepare("collect", explicit_settings(args), Options(config=args.config))[0]


def test_a_new_atari_run_starts_from_the_atari_recipe(tmp_path):
    config = new_run_settings(tmp_path, "--env", "breakout")
    assert config.env == "breakout" and config.name == "demo"  # the run's game and name, not the recipe's
    assert config.frame_shape == (96, 80) and config.tokenizer_steps == 1200 and config.probe_steps == 50000
    assert config.predictor_kwargs == ATARI_PREDICTOR_KWARGS


def test_a_catch_run_keeps_the_demo_settings(tmp_path):
    config = new_run_settings(tmp_path, "--env", "catch")
    assert config.frame_shape == (32, 32) and config.predictor_kwargs == DEMO_PREDICTOR_KWARGS
    assert (config.tokenizer_steps, config.decoder_steps) == (600, 800)


def test_a_frame_size_flag_under_the_atari_recipe_means_square_frames(tmp_path):
    assert new_run_settings(tmp_path, "--env", "pong", "--frame-size", "64").frame_shape == (64, 64)
    shaped = new_run_settings(tmp_path, "--env", "pong", "--frame-size", "64", "--frame-height", "80")
    assert shaped.frame_shape == (80, 64)


def test_a_frame_size_flag_with_the_shipped_atari_recipe_means_square_frames(tmp_path):
    config = new_run_settings(tmp_path, "--config", "atari", "--env", "breakout", "--frame-size", "64")
    assert config.frame_shape == (64, 64)


def test_config_demo_starts_an_atari_run_from_the_catch_settings(tmp_path):
    config = new_run_settings(tmp_path, "--env", "pong", "--config", "demo")
    assert config.frame_shape == (32, 32) and config.predictor_kwargs == DEMO_PREDICTOR_KWARGS
    assert config.env == "pong"


def test_an_own_config_file_is_laid_over_the_atari_recipe(tmp_path):
    config_file = tmp_path / "mine.toml"
    config_file.write_text("tokenizer_steps = 7\n[predictor_kwargs]\nrecency_bias = 2.0\n")
    config = new_run_settings(tmp_path, "--env", "pong", "--config", str(config_file))
    assert config.tokenizer_steps == 7 and config.frame_shape == (96, 80)
    assert config.predictor_kwargs == {**ATARI_PREDICTOR_KWARGS, "recency_bias": 2.0}


def test_a_flag_overrides_the_shipped_experiment():
    values = settings(["train-tokenizer", "--config", "atari", "--tokenizer-steps", "300"])
    assert values["tokenizer_steps"] == 300 and values["frame_height"] == 96


def test_a_file_named_like_a_shipped_experiment_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atari").write_text("tokenizer_steps = 7\n")
    assert settings(["collect", "--config", "atari"])["tokenizer_steps"] == 7


def test_an_unknown_experiment_name_lists_the_shipped_ones(capsys):
    code, err = run_cli(["collect", "--config", "atary"], capsys)
    assert code == 2 and "atary" in err and "atari, demo, quick" in err


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--agent-steps", "-5"], "--agent-steps"),
        (["--collect-steps", "0"], "--collect-steps"),
        (["--num-envs", "0"], "--num-envs"),
        (["--frame-size", "30"], "--frame-size"),
        (["--frame-height", "30"], "--frame-height"),
        (["--frame-height", "-8"], "--frame-height"),
        (["--name", "../x"], "--name"),
        (["--name", "/tmp/abs"], "--name"),
        (["--name", ""], "--name"),
        (["--name", "."], "--name"),
        (["--device", "cuda:7"], "--device"),
        (["--device", "tpu"], "--device"),
        (["--lr", "nan"], "--lr"),
        (["--tokenizer-lr", "0"], "--tokenizer-lr"),
    ],
)
def test_bad_settings_are_one_line_errors_that_write_nothing(tmp_path, capsys, flags, named):
    runs = tmp_path / "runs"
    code, err = run_cli(["demo", "--runs-dir", str(runs), *flags], capsys)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1
    assert err.startswith("aime-rl demo: error: ")
    assert not runs.exists() and list(tmp_path.iterdir()) == []


def test_unknown_settings_in_a_config_file_are_an_error(tmp_path, capsys):
    config_file = tmp_path / "exp.toml"
    config_file.write_text("no_such_setting = 1\n")
    code, err = run_cli(["collect", "--config", str(config_file)], capsys)
    assert code == 2 and "no_such_setting" in err


def test_wrong_types_in_a_config_file_are_an_error(tmp_path, capsys):
    config_file = tmp_path / "exp.toml"
    config_file.write_text('frame_size = "big"\n')
    code, err = run_cli(["collect", "--config", str(config_file), "--runs-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "frame_size" in err


def test_a_missing_config_file_is_an_error(tmp_path, capsys):
    code, err = run_cli(["collect", "--config", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "nope.toml" in err


def test_unknown_agent_kwargs_are_refused_before_anything_is_written(tmp_path, capsys):
    code, err = run_cli(["demo", "--runs-dir", str(tmp_path / "r"), "--agent-kwarg", "n_stepz=3"], capsys)
    assert code == 2 and "n_stepz" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("kwarg", "problem"),
    [
        ("n_steps=abc", "PPO's n_steps is a number"),
        ("policy_kwargs=dict", "PPO's policy_kwargs is a table of settings"),
        ("gamma=1.5", "PPO's gamma is between 0 and 1"),
        ("n_steps=0", "PPO's n_steps is a whole number >= 1"),
        ("normalize_advantage=1", "PPO's normalize_advantage is true or false"),
        ("learning_rate=0", "PPO's learning_rate is > 0"),
    ],
)
def test_agent_kwargs_of_the_wrong_kind_are_named_before_anything_is_written(
    tmp_path, capsys, kwarg, problem
):
    code, err = run_cli(["demo", "--runs-dir", str(tmp_path / "r"), "--agent-kwarg", kwarg], capsys)
    assert code == 2 and f"--agent-kwarg {kwarg.split('=')[0]}=" in err and problem in err
    assert not (tmp_path / "r").exists()


def test_an_agent_kwarg_typo_in_a_config_file_is_refused_by_any_command(tmp_path, capsys):
    config_file = tmp_path / "exp.toml"
    config_file.write_text("[agent_kwargs]\nn_step = 3\n")
    code, err = run_cli(["collect", "--config", str(config_file), "--runs-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "n_step" in err and not (tmp_path / "r").exists()


def test_an_algorithm_that_cannot_act_in_the_env_is_refused_before_anything_is_written(tmp_path, capsys):
    code, err = run_cli(["demo", "--runs-dir", str(tmp_path / "r"), "--algo", "sac"], capsys)
    assert code == 2 and "SAC needs a Box action space" in err and not (tmp_path / "r").exists()


def test_train_agent_without_a_model_says_what_to_do_and_leaves_nothing(tmp_path, capsys):
    code, err = run_cli(["train-agent", "--runs-dir", str(tmp_path), "--name", "empty"], capsys)
    assert code == 2 and f"aime-rl train-context --name empty --runs-dir {tmp_path}`" in err
    assert not (tmp_path / "empty").exists()


def test_the_old_names_still_work_with_a_one_line_notice(tmp_path, capsys):
    code, err = run_cli(["train-perceiver", "--runs-dir", str(tmp_path), "--name", "empty"], capsys)
    notice, error = err.strip().splitlines()  # the deprecation notice, then the usual one-line error
    assert code == 2 and "deprecated" in notice and "train-context" in notice
    assert error.startswith("aime-rl train-context: error: ") and "train-tokenizer" in error
    assert settings(["train-tokenizer", "--preset", "seed"])["preset"] == "paper"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--preset paper" in err
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train-context" in out and "train-perceiver" not in out  # the old name is not advertised
    assert "choices: tiny, small, paper" in help_text("train-tokenizer", capsys)


def test_a_runs_dir_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = run_cli(["collect", "--runs-dir", str(blocker / "runs"), "--collect-steps", "8"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(surprise=1),
        lambda c: c.pop("frame_size"),
        lambda c: c.update(frame_size="64"),
        lambda c: c.update(num_envs=0),
    ],
    ids=["extra key", "missing key", "wrong type", "bad value"],
)
def test_a_hand_edited_run_config_is_one_line(tmp_path, capsys, edit):
    run = tmp_path / "r"
    run.mkdir()
    values = prepare("collect", {"runs_dir": str(tmp_path), "name": "r"}, Options())[0].to_dict()
    edit(values)
    (run / "config.json").write_text(json.dumps(values))
    code, err = run_cli(["collect", "--runs-dir", str(tmp_path), "--name", "r"], capsys)
    assert code == 2 and "config.json" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.json").read_text() == json.dumps(values)  # nothing rewritten


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="--agent-steps"):
        main(["train-agent", "--runs-dir", str(tmp_path), "--agent-steps", "0", "--debug"])


def test_a_run_config_written_before_newer_settings_existed_still_loads(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    values = prepare("collect", {"runs_dir": str(tmp_path), "name": "r"}, Options())[0].to_dict()
    for added in ADDED_SETTINGS:
        values.pop(added)
    (run / "config.json").write_text(json.dumps(values))
    config = prepare("collect", {"runs_dir": str(tmp_path), "name": "r"}, Options())
    assert config[0].probe_steps == 3000 and config[0].deterministic is False


def test_a_run_from_before_tokenizer_lr_keeps_training_its_tokenizer_at_its_lr(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    values = prepare("collect", {"runs_dir": str(tmp_path), "name": "r"}, Options())[0].to_dict()
    values.pop("tokenizer_lr")
    values["lr"] = 5e-4  # what its tokenizer (and context model) trained with
    (run / "config.json").write_text(json.dumps(values))
    config = prepare("collect", {"runs_dir": str(tmp_path), "name": "r"}, Options())[0]
    assert config.tokenizer_lr == config.lr == 5e-4


def test_a_misspelt_flag_is_named_by_its_command_with_the_flag_it_resembles(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["collect", "--colect-steps", "5"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert (
        "aime-rl collect: error: unrecognized arguments: --colect-steps 5 (did you mean --collect-steps?)"
        in err
    )


def test_an_unknown_flag_without_a_likeness_is_named_without_a_guess(capsys):
    with pytest.raises(SystemExit):
        main(["probe", "--zzz"])
    err = capsys.readouterr().err
    assert "aime-rl probe: error: unrecognized arguments: --zzz (see aime-rl probe --help)" in err


def test_an_unknown_command_is_named_with_the_commands_and_a_close_one(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["evalute"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "unknown command 'evalute' (did you mean evaluate?)" in err
    assert (
        "collect, train-tokenizer" in err and "train-perceiver" not in err
    )  # the deprecated name is not offered
