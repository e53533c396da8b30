"""A run directory you can trust: stages own their outputs, reruns are no-ops, changed inputs are never silent."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aime_rl.cli import explicit_settings, main, make_parser
from aime_rl.evaluation import DEFAULT_REPRESENTATIONS, ProbeConfig
from aime_rl.evaluation.representations import REPRESENTATIONS
from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer, get_preset
from aime_rl.pipeline import Options, RunConfig, evaluate_stages, prepare
from aime_rl.pipeline.config import KNOWN_REPRESENTATIONS, PROBE_REPRESENTATIONS
from aime_rl.pipeline.lock import LOCK_NAME
from aime_rl.replay import ReplayStore, ReplayWindowDataset
from aime_rl.training import CheckpointManager
from aime_rl.utils.io import file_digest
from aime_rl.utils.tensorboard import read_event_images

TINY = [
    "--frame-size", "32", "--collect-steps", "120", "--num-envs", "2",
]  # fmt: skip
DEMO_PREDICTOR_KWARGS = {
    "embeddings_from_codes": True,
    "local_motion_frames": 3,
    "local_motion_context": True,
    "local_motion_horizon": 3,
    "local_motion_inputs": "pixels",
    "local_motion_history": True,
    "local_motion_lr_scale": 3.0,
    "num_latents": 8,
}  # aime_rl/experiments/demo.toml
TRAIN = ["--preset", "tiny", "--sequence-length", "4", "--batch-size", "2", "--decoder-steps", "2"]
AGENT = ["--agent-steps", "32", "--window", "4", "--agent-kwarg", "n_steps=16", "--agent-kwarg", "batch_size=32",
         "--agent-kwarg", "n_epochs=1"]  # fmt: skip


def cli(run, *argv) -> int:
    return main([argv[0], "--runs-dir", str(run.parent), "--name", run.name, *argv[1:]])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run through collect → tokenizer (2 steps) → context model (2 steps) → agent → evaluate."""
    run = tmp_path_factory.mktemp("runs") / "r"
    assert cli(run, "collect", *TINY) == 0
    assert cli(run, "train-tokenizer", *TRAIN, "--tokenizer-steps", "2") == 0
    assert cli(run, "train-context", "--context-steps", "2") == 0
    assert cli(run, "train-agent", *AGENT) == 0
    assert cli(run, "evaluate", "--eval-episodes", "1") == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(finished_run, copy)
    return copy


def outputs(run) -> dict:
    """Every file of the run but the lock (which names its last holder) → its digest."""
    return {p: digest(p) for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def test_rerunning_a_finished_stage_is_a_noop_that_says_so(run, capsys):
    before = outputs(run)
    assert cli(run, "train-tokenizer") == 0
    assert "already trained 2 steps; --tokenizer-steps N to train further" in capsys.readouterr().out
    assert outputs(run) == before


def test_training_the_tokenizer_further_never_touches_the_context_model(run):
    model = digest(run / "model" / "model.safetensors")
    tokenizer = digest(run / "tokenizer" / "model" / "model.safetensors")
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    assert digest(run / "model" / "model.safetensors") == model
    assert digest(run / "tokenizer" / "model" / "model.safetensors") != tokenizer
    assert json.loads((run / "stages" / "tokenizer.json").read_text())["steps"] == 3


def tree_digest(directory: Path) -> dict:
    return {p.relative_to(directory): digest(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def held_out_tokens(run: Path):
    tokenizer = VQPTTokenizer.from_pretrained(run / "tokenizer" / "model")
    frames = ReplayWindowDataset(run / "replay", 4, 4, seed=3, subset="all")[0]["frames"]  # [B, T, 3, H, W]
    return tokenizer.encode(frames).tokens


def test_more_decoder_steps_train_the_decoder_alone_and_keep_the_tokens(run, capsys):
    main_checkpoints, tokens = tree_digest(run / "tokenizer" / "checkpoints"), held_out_tokens(run)
    weights = digest(run / "tokenizer" / "model" / "model.safetensors")
    assert cli(run, "train-tokenizer", "--decoder-steps", "4") == 0
    assert "training the decoder further, from 2 to 4 steps" in capsys.readouterr().out
    assert tree_digest(run / "tokenizer" / "checkpoints") == main_checkpoints
    assert digest(run / "tokenizer" / "model" / "model.safetensors") != weights
    assert torch.equal(held_out_tokens(run), tokens)
    manifest = json.loads((run / "stages" / "tokenizer.json").read_text())
    assert (manifest["steps"], manifest["decoder_steps"], manifest["status"]) == (2, 4, "done")
    assert (
        cli(run, "train-context", "--context-steps", "3") == 0
    )  # the same codes: the context model trains on


def test_a_context_model_from_before_codes_fingerprints_still_checks_its_tokenizer(run, capsys):
    path = run / "stages" / "context.json"
    manifest = json.loads(path.read_text())
    tokenizer = digest(run / "tokenizer" / "model" / "model.safetensors")
    manifest["inputs"] = {"tokenizer": tokenizer, "replay": manifest["inputs"]["replay"]}  # the older format
    path.write_text(json.dumps(manifest))
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    capsys.readouterr()
    assert cli(run, "train-context", "--context-steps", "3") == 2
    assert "tokenizer changed" in capsys.readouterr().err


def test_fewer_decoder_steps_than_trained_are_refused(run, capsys):
    assert cli(run, "train-tokenizer", "--decoder-steps", "1") == 2
    assert "--decoder-steps 1" in capsys.readouterr().err


def test_training_the_tokenizer_further_redoes_the_decoder_steps_on_the_new_codes(run):
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    latest = CheckpointManager(run / "tokenizer" / "checkpoints").latest_path()
    trained = load_file(latest / "model.safetensors")
    saved = load_file(run / "tokenizer" / "model" / "model.safetensors")
    outside_the_decoder = [k for k in trained if not k.startswith("decoder.")]
    assert outside_the_decoder and all(torch.equal(saved[k], trained[k]) for k in outside_the_decoder)
    assert CheckpointManager(run / "tokenizer" / "decoder" / "checkpoints").latest_step() == 2
    assert json.loads((run / "stages" / "tokenizer.json").read_text())["steps"] == 3


def test_a_killed_decoder_training_resumes_without_training_the_tokenizer_again(run, monkeypatch):
    from aime_rl.training import Trainer

    main_checkpoints = tree_digest(run / "tokenizer" / "checkpoints")
    original = Trainer.train_step

    def die_in_the_decoder_steps(self, batch):
        if self.logdir.name == "decoder" and self.step == 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", die_in_the_decoder_steps)
    assert cli(run, "train-tokenizer", "--decoder-steps", "8") == 130
    manifest = json.loads((run / "stages" / "tokenizer.json").read_text())
    assert (manifest["status"], manifest["decoder_steps"]) == (
        "done",
        2,
    )  # the saved tokenizer is still that one
    assert cli(run, "train-context", "--context-steps", "3") == 0  # so what reads it goes on
    monkeypatch.setattr(Trainer, "train_step", original)
    assert cli(run, "train-tokenizer", "--decoder-steps", "8") == 0
    assert tree_digest(run / "tokenizer" / "checkpoints") == main_checkpoints
    assert CheckpointManager(run / "tokenizer" / "decoder" / "checkpoints").latest_step() == 8
    assert json.loads((run / "stages" / "tokenizer.json").read_text())["decoder_steps"] == 8


def checkpoint_lr(stage_dir: Path) -> float:
    """The learning rate the stage's latest checkpoint was trained with."""
    latest = (stage_dir / "checkpoints" / "latest").read_text().strip()
    return json.loads((stage_dir / "checkpoints" / latest / "config.json").read_text())["trainer"]["lr"]


def test_the_tokenizer_and_the_context_model_train_at_their_own_learning_rates(finished_run):
    assert checkpoint_lr(finished_run / "tokenizer") == RunConfig().tokenizer_lr == 3e-3
    assert checkpoint_lr(finished_run / "context_model") == RunConfig().lr == 1e-3


def test_a_new_tokenizer_lr_applies_when_training_further(run):
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3", "--tokenizer-lr", "0.002") == 0
    assert checkpoint_lr(run / "tokenizer") == 0.002


def test_the_context_model_refuses_to_resume_on_a_retrained_tokenizer(run, capsys):
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    capsys.readouterr()
    assert cli(run, "train-context", "--context-steps", "3") == 2
    assert "tokenizer changed" in capsys.readouterr().err


def test_restart_trains_the_context_model_on_the_new_tokenizer(run):
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    assert cli(run, "train-context", "--restart") == 0
    tokenizer = VQPTTokenizer.from_pretrained(run / "tokenizer" / "model").state_dict()
    model = CausalPerceiverIO.from_pretrained(run / "model").tokenizer.state_dict()
    assert all(np.array_equal(model[k].numpy(), v.numpy()) for k, v in tokenizer.items())
    assert not (run / "agent").exists()  # made from the old context model: discarded with it


def test_the_old_command_name_still_trains_the_context_model(run, capsys):
    assert cli(run, "train-perceiver", "--context-steps", "3") == 0
    assert "now called `aime-rl train-context`" in capsys.readouterr().err
    assert json.loads((run / "stages" / "context.json").read_text())["steps"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        [
            "train-agent",
            "--restart",
            "--agent-kwarg",
            "batch_size=1",
        ],  # SB3 refuses it once the agent is built
        ["train-tokenizer", "--restart", "--sequence-length", "100"],  # longer than any episode of the replay
    ],
    ids=["agent", "tokenizer and everything after it"],
)
def test_a_restart_that_fails_puts_back_everything_it_discarded(run, capsys, argv):
    before = outputs(run)
    assert cli(run, *argv) == 2
    out = capsys.readouterr().out
    assert "--restart discarded" in out and "restored" in out
    assert outputs(run) == before
    assert not (run / ".discarded").exists()


def test_an_agent_of_another_algorithm_trains_without_the_runs_ppo_settings(run):
    argv = ["--restart", "--algo", "a2c", "--agent-steps", "32", "--agent-kwarg", "n_steps=8"]
    assert cli(run, "train-agent", *argv) == 0
    stored = json.loads((run / "config.json").read_text())
    assert (stored["algo"], stored["agent_kwargs"]) == ("a2c", {"n_steps": 8})
    assert cli(run, "evaluate", "--eval-episodes", "1") == 0


def test_evaluate_refuses_an_agent_whose_observation_statistics_are_missing(run, capsys):
    (run / "agent" / "observation_normalization.json").unlink()
    assert cli(run, "evaluate", "--restart", "--eval-episodes", "1") == 2
    assert "observation_normalization.json" in capsys.readouterr().err
    assert (run / "report.json").is_file()  # the report of before is kept
    assert cli(run, "train-agent") == 2  # not "already trained"
    err = capsys.readouterr().err
    assert "observation_normalization.json" in err and "train-agent --name r" in err


def test_an_interrupted_restart_keeps_the_settings_its_outputs_follow(run, monkeypatch):
    from aime_rl.pipeline.progress import Progress

    def interrupt(self, n=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "update", interrupt)
    assert cli(run, "collect", "--restart", "--frame-size", "48") == 130
    assert json.loads((run / "config.json").read_text())["frame_size"] == 48
    assert not (run / "tokenizer").exists()  # discarded with the replay it was made from


def test_a_demo_restart_that_fails_late_keeps_the_stages_it_redid(run, capsys):
    tokenizer = digest(run / "tokenizer" / "model" / "model.safetensors")
    argv = ["--restart", "--seed", "5", "--probe-steps", "60", "--probe-episode-steps", "0"]
    assert cli(run, "demo", *argv) == 2  # 60 probe frames: one episode, too few for the probe's split
    assert "failed after redoing collect, tokenizer, context, agent" in capsys.readouterr().out
    assert digest(run / "tokenizer" / "model" / "model.safetensors") != tokenizer
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    assert not (run / "report.json").exists() and not (run / ".discarded").exists()


def test_a_first_demo_that_fails_late_keeps_what_it_trained(tmp_path, capsys):
    run = tmp_path / "new"
    flags = [*TINY, *TRAIN, "--tokenizer-steps", "2", "--context-steps", "2", *AGENT, "--eval-episodes", "2"]
    assert cli(run, "demo", *flags, "--probe-steps", "60", "--probe-episode-steps", "0") == 2  # one episode
    assert "keeps what its stages made" in capsys.readouterr().out
    tokenizer = digest(run / "tokenizer" / "model" / "model.safetensors")
    assert cli(run, "demo", "--probe-steps", "300", "--probe-episode-steps", "50") == 0
    out = capsys.readouterr().out
    assert "train-tokenizer: already trained" in out and "train-agent: already trained" in out
    assert digest(run / "tokenizer" / "model" / "model.safetensors") == tokenizer


class SlidingSquare(gym.Env):
    """A 32×32 image env that no probe knows the true state of: a white square the actions move left or right."""

    observation_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = int(self.np_random.integers(0, 28)), 0
        return self.frame(), {}

    def step(self, action):
        self.x, self.t = int(np.clip(self.x + (1 if action else -1), 0, 28)), self.t + 1
        return self.frame(), float(self.x > 14), self.t >= 12, False, {}

    def frame(self) -> np.ndarray:
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[14:18, self.x : self.x + 4] = 255
        return frame


@pytest.fixture
def unlabelled_env():
    """The id of :class:`SlidingSquare`, registered for the test."""
    env_id = "AimeRlTest/SlidingSquare-v0"
    gym.register(env_id, entry_point=SlidingSquare)
    yield env_id
    gym.registry.pop(env_id)


def test_a_demo_on_an_env_of_unknown_state_runs_every_stage_but_the_probe(tmp_path, capsys, unlabelled_env):
    run = tmp_path / "square"
    flags = [*TINY, *TRAIN, "--tokenizer-steps", "2", "--context-steps", "2", *AGENT, "--eval-episodes", "2"]
    assert cli(run, "demo", "--env", unlabelled_env, *flags) == 0
    out = capsys.readouterr().out
    probe_line = out.split("[5/6] ")[1].splitlines()[0]  # not "probing … frames (skipped: …)"
    assert probe_line.startswith(
        "probe skipped: aime-rl probe knows the true state of Catch, of CartPole and of"
    )
    assert f"not of {unlabelled_env!r})" in out
    summary = out.split("== aime-rl demo summary ==")[1]
    assert "what the context knows: not probed (aime-rl probe knows the true state of Catch" in summary
    report = json.loads((run / "report.json").read_text())
    assert (
        report["probe"] == {}
        and "agent_return_mean" in report
        and "Not probed" in (run / "report.md").read_text()
    )
    assert not (run / "probe.json").exists()
    assert cli(run, "demo") == 0  # a rerun reports the demo it made, measuring nothing again
    assert capsys.readouterr().out.count("(done: nothing it measures changed)") == 2
    assert cli(run, "probe") == 2  # asked for explicitly, the probe says why it cannot


def test_a_demo_not_probed_is_probed_once_its_env_has_labels(tmp_path, capsys, unlabelled_env, monkeypatch):
    run = tmp_path / "square"
    flags = [*TINY, *TRAIN, "--tokenizer-steps", "2", "--context-steps", "2", *AGENT, "--eval-episodes", "2"]
    assert cli(run, "demo", "--env", unlabelled_env, *flags, "--probe-steps", "120") == 0
    assert "what the context knows: not probed" in capsys.readouterr().out

    def square_labels(env, obs=None, info=None):
        return {"square_x": float(env.unwrapped.x)}

    monkeypatch.setattr(evaluate_stages, "default_label_fn", lambda env: square_labels)  # a later version
    assert cli(run, "demo") == 0
    out = capsys.readouterr().out
    assert "(done: nothing it measures changed)" not in out and "| square_x |" in out
    assert json.loads((run / "report.json").read_text())["probe"]["context"]["square_x"] <= 1.0


def test_a_new_run_whose_command_fails_before_any_stage_is_removed(tmp_path):
    assert cli(tmp_path / "new", "collect", "--frame-size", "33") == 2
    assert not (tmp_path / "new").exists()


def test_a_plain_rerun_resumes_an_interrupted_longer_training_and_fewer_steps_are_refused(
    run, capsys, monkeypatch
):
    from aime_rl.training import Trainer

    original = Trainer.train_step

    def stop_at_step_5(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_5)
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "6") == 130  # a checkpoint at step 3
    monkeypatch.setattr(Trainer, "train_step", original)
    capsys.readouterr()
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "2") == 2
    assert "checkpoint holds 3 steps" in capsys.readouterr().err
    assert cli(run, "train-tokenizer") == 0  # the run's settings say 6: resumed there
    assert json.loads((run / "stages" / "tokenizer.json").read_text())["steps"] == 6


def test_fewer_steps_than_trained_is_refused(run, capsys):
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "1") == 2
    assert "--restart" in capsys.readouterr().err


def test_a_data_shaping_flag_that_contradicts_the_run_is_refused(run, capsys):
    config = (run / "config.json").read_text()
    assert cli(run, "train-tokenizer", "--preset", "small") == 2
    assert "preset" in capsys.readouterr().err
    assert cli(run, "collect", "--frame-size", "64") == 2
    assert "frame_size=32" in capsys.readouterr().err
    assert cli(run, "evaluate", "--env", "cartpole_pixels") == 2
    assert (run / "config.json").read_text() == config


@pytest.mark.parametrize(
    ("missing", "command", "rebuilds"),
    [
        ("tokenizer/model", "train-tokenizer", "train-tokenizer"),
        ("model", "train-context", "train-context"),
        ("agent/agent.zip", "train-agent", "train-agent"),
        ("agent/agent.zip", "evaluate", "train-agent"),
    ],
)
def test_a_finished_stage_whose_file_is_gone_says_what_rebuilds_it(run, capsys, missing, command, rebuilds):
    target = run / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    capsys.readouterr()
    assert cli(run, command) == 2
    out, err = capsys.readouterr()
    assert f"`aime-rl {rebuilds} --name r --runs-dir {run.parent} --restart` makes it again" in err
    assert len(err.strip().splitlines()) == 1 and "already trained" not in out


@pytest.mark.parametrize(
    ("damaged", "command", "rebuilds"),
    [
        ("tokenizer/model/model.safetensors", "train-tokenizer", "train-tokenizer"),
        ("agent/agent.zip", "train-agent", "train-agent"),
        ("agent/agent.zip", "evaluate", "train-agent"),
    ],
)
@pytest.mark.parametrize("damage", ["cut short", "bytes changed"])
def test_a_damaged_file_is_not_taken_for_a_finished_stage(run, capsys, damaged, command, rebuilds, damage):
    path = run / damaged
    data = bytearray(path.read_bytes())
    if damage == "cut short":
        data = data[:1000]
    else:  # inside the stored data, past the first header: what only a checksum finds
        data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli(run, command) == 2
    out, err = capsys.readouterr()
    assert path.name in err and f"{rebuilds} --name r" in err and "already trained" not in out
    assert len(err.strip().splitlines()) == 1


def test_an_agent_refused_for_other_settings_names_them(run, capsys):
    assert cli(run, "train-agent", "--agent-steps", "48") == 2
    err = capsys.readouterr().err
    assert "steps (32 → 48)" in err and f"--name r --runs-dir {run.parent} --restart --agent-steps 48`" in err


def test_a_bad_value_is_named_before_it_is_called_a_contradiction(run, capsys):
    assert cli(run, "train-agent", "--window", "-3") == 2
    err = capsys.readouterr().err
    assert "--window must be a positive integer" in err and "--restart" not in err


def test_a_restart_discards_the_probe_results_of_the_model_it_replaces(run, capsys):
    assert (
        cli(
            run,
            "probe",
            "--probe-steps",
            "300",
            "--probe-episode-steps",
            "50",
            "--probe-representations",
            "context",
        )
        == 0
    )
    assert (run / "probe.json").is_file()
    assert cli(run, "train-context", "--restart") == 0
    assert not (run / "probe.json").exists() and not (run / "probe").exists()


def probe_run(run) -> None:
    argv = ["--probe-steps", "300", "--probe-episode-steps", "50", "--probe-representations", "context"]
    assert cli(run, "probe", *argv) == 0
    assert (run / "probe.json").is_file()


def test_an_agent_restart_keeps_the_probe_of_the_context_model(run, capsys):
    probe_run(run)
    before = digest(run / "probe.json")
    assert cli(run, "train-agent", "--restart", *AGENT) == 0
    assert digest(run / "probe.json") == before and (run / "probe.md").is_file()
    assert not (run / "report.json").exists()  # the evaluation was of the agent it replaced


def test_a_run_with_a_world_model_probes_its_belief_beside_any_list(run, capsys):
    assert cli(run, "train-world-model", "--world-model-steps", "2") == 0
    probe_run(run)  # --probe-representations context: a list of the user's, not the default one
    assert list(json.loads((run / "probe.json").read_text())["representations"]) == ["context", "belief"]


def test_a_new_window_discards_the_probe_read_through_the_old_one(run, capsys):
    probe_run(run)
    assert cli(run, "train-agent", "--restart", *AGENT, "--window", "5") == 0
    assert not (run / "probe.json").exists() and not (run / "probe").exists()


def test_a_shaping_setting_of_an_earlier_stage_cannot_be_restarted_from_a_later_one(run, capsys):
    assert cli(run, "train-context", "--restart", "--preset", "small") == 2
    assert "train-tokenizer --restart --preset small" in capsys.readouterr().err


def test_a_predictor_kwarg_is_refused_on_a_trained_context_model_and_redone_on_restart(run, capsys):
    model = digest(run / "model" / "model.safetensors")
    assert cli(run, "train-context", "--predictor-kwarg", "recency_bias=2.0") == 2
    assert "train-context --restart --predictor-kwarg recency_bias=2.0" in capsys.readouterr().err
    assert digest(run / "model" / "model.safetensors") == model
    assert cli(run, "train-context", "--restart", "--predictor-kwarg", "recency_bias=2.0") == 0
    assert CausalPerceiverIO.from_pretrained(run / "model").config.predictor.recency_bias == 2.0
    stored = json.loads((run / "config.json").read_text())["predictor_kwargs"]
    assert stored == {**DEMO_PREDICTOR_KWARGS, "recency_bias": 2.0}  # the run's own keys stay
    assert not (run / "agent").exists()  # made from the old context model: discarded with it


def test_a_predictor_kwarg_that_names_the_presets_own_value_is_no_change(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["predictor_kwargs"] = {}  # a run made before its recipe named embeddings_from_codes
    (run / "config.json").write_text(json.dumps(config))
    assert cli(run, "train-context", "--predictor-kwarg", "embeddings_from_codes=false") == 0
    assert "already trained" in capsys.readouterr().out
    assert cli(run, "train-context", "--predictor-kwarg", "embeddings_from_codes=true") == 2  # a real change


def test_a_new_predictor_kwarg_keeps_the_runs_others(run):
    assert cli(run, "train-context", "--restart", "--predictor-kwarg", "recency_bias=2.0") == 0
    assert cli(run, "train-context", "--restart", "--predictor-kwarg", "context_prediction_weight=0.5") == 0
    stored = json.loads((run / "config.json").read_text())["predictor_kwargs"]
    assert stored == {**DEMO_PREDICTOR_KWARGS, "recency_bias": 2.0, "context_prediction_weight": 0.5}
    predictor = CausalPerceiverIO.from_pretrained(run / "model").config.predictor
    assert (predictor.recency_bias, predictor.context_prediction_weight) == (2.0, 0.5)


def test_a_predictor_kwarg_the_run_already_has_is_no_change(run):
    assert cli(run, "train-context", "--restart", "--predictor-kwarg", "recency_bias=2.0") == 0
    model = digest(run / "model" / "model.safetensors")
    assert cli(run, "train-context", "--predictor-kwarg", "recency_bias=2.0") == 0
    assert digest(run / "model" / "model.safetensors") == model


def test_a_predictor_kwarg_leaves_the_tokenizer_alone(run):
    tokenizer = digest(run / "tokenizer" / "model" / "model.safetensors")
    assert cli(run, "train-context", "--restart", "--predictor-kwarg", "recency_bias=2.0") == 0
    assert digest(run / "tokenizer" / "model" / "model.safetensors") == tokenizer


def test_later_stages_read_the_run_config(tmp_path):
    run = tmp_path / "r"
    assert cli(run, "collect", "--frame-size", "64", "--collect-steps", "40", "--num-envs", "2") == 0
    assert (
        cli(
            run,
            "train-tokenizer",
            "--preset",
            "tiny",
            "--tokenizer-steps",
            "1",
            "--sequence-length",
            "4",
            "--decoder-steps",
            "1",
        )
        == 0
    )
    assert json.loads((run / "config.json").read_text())["frame_size"] == 64
    assert tuple(ReplayStore.open(run / "replay").frame_shape[:2]) == (64, 64)
    assert cli(run, "train-context", "--context-steps", "1") == 0
    assert CausalPerceiverIO.from_pretrained(run / "model").config.video_shape[-1] == 64


def test_a_frame_height_keeps_the_frames_shape_through_the_run(tmp_path, capsys):
    run = tmp_path / "r"
    assert (
        cli(
            run,
            "collect",
            "--frame-size",
            "32",
            "--frame-height",
            "48",
            "--collect-steps",
            "40",
            "--num-envs",
            "2",
        )
        == 0
    )
    assert tuple(ReplayStore.open(run / "replay").frame_shape[:2]) == (48, 32)
    assert cli(run, "train-tokenizer", *TRAIN, "--tokenizer-steps", "1") == 0
    assert cli(run, "train-context", "--context-steps", "1") == 0
    assert CausalPerceiverIO.from_pretrained(run / "model").frame_size == (48, 32)
    assert cli(run, "collect", "--frame-height", "64") == 2
    assert "frame_height=48" in capsys.readouterr().err


def test_an_agent_on_frames_that_are_not_square_trains_and_is_reported(tmp_path):
    run = tmp_path / "r"
    collect = ["--frame-size", "32", "--frame-height", "48", "--collect-steps", "40", "--num-envs", "2"]
    assert cli(run, "collect", *collect) == 0
    assert cli(run, "train-tokenizer", *TRAIN, "--tokenizer-steps", "1") == 0
    assert cli(run, "train-context", "--context-steps", "1") == 0
    assert cli(run, "train-agent", *AGENT) == 0
    assert cli(run, "evaluate", "--eval-episodes", "1") == 0
    assert "at 48×32, seed 0" in (run / "report.md").read_text()


def test_the_agent_keeps_its_window_and_evaluate_uses_it(run):
    assert json.loads((run / "agent" / "agent.json").read_text())["window"] == 4
    report = json.loads((run / "report.json").read_text())
    assert report["window"] == 4 and report["env"] == "catch"


def test_a_bad_agent_flag_never_overwrites_the_agent(run, capsys):
    agent = digest(run / "agent" / "agent.zip")
    assert cli(run, "train-agent", "--agent-steps", "-5") == 2
    assert cli(run, "train-agent", "--agent-steps", "64") == 2  # a different agent: needs --restart
    assert "--restart" in capsys.readouterr().err
    assert digest(run / "agent" / "agent.zip") == agent


def episode_keys(store: ReplayStore) -> list[str]:
    return [hashlib.sha256(episode.frames().tobytes()).hexdigest() for episode in store.episodes]


def test_collect_tops_up_to_a_target_with_fresh_seeds(run, capsys):
    assert cli(run, "collect") == 0
    assert "already has" in capsys.readouterr().out
    assert cli(run, "collect", "--collect-steps", "360") == 0
    store = ReplayStore.open(run / "replay")
    assert store.num_steps >= 300
    keys = episode_keys(store)
    assert len(set(keys)) == len(keys)  # no episode recorded twice


def test_collect_tops_up_a_replay_that_lost_files_and_clears_what_they_left(run, capsys):
    next(
        iter(sorted((run / "replay" / "chunks").glob("*.commit.json")))
    ).unlink()  # one episode's record gone
    left = ReplayStore.open(run / "replay").num_steps
    capsys.readouterr()
    assert cli(run, "collect") == 0
    out = capsys.readouterr().out
    assert "unfinished files" in out and "files were removed" in out
    store = ReplayStore.open(run / "replay")
    assert store.num_steps > left and not store.recovery_report.orphan_files
    assert json.loads((run / "stages" / "collect.json").read_text())["replay"]["steps"] == store.num_steps


def test_a_replay_file_that_is_gone_names_the_command_that_collects_again(run, capsys):
    next(iter(sorted((run / "replay" / "chunks").glob("*.frames.npy")))).unlink()
    for command in ("collect", "train-tokenizer"):
        assert cli(run, command) == 2
        err = capsys.readouterr().err
        assert (
            "frames.npy" in err
            and "collect --name r" in err
            and "--restart` collects the replay again" in err
        )


def test_a_stopped_collect_past_a_smaller_target_is_finished_by_it(run):
    manifest = json.loads((run / "stages" / "collect.json").read_text())
    (run / "stages" / "collect.json").write_text(
        json.dumps({**manifest, "status": "running", "target": 10**6})
    )
    assert cli(run, "collect", "--collect-steps", "16") == 0
    assert json.loads((run / "stages" / "collect.json").read_text())["status"] == "done"


def test_a_killed_collect_is_topped_up_without_duplicates(tmp_path, monkeypatch):
    from aime_rl.pipeline.progress import Progress

    run = tmp_path / "r"
    calls = {"n": 0}
    original = Progress.update

    def die_midway(self, n=1):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(Progress, "update", die_midway)
    assert cli(run, "collect", "--collect-steps", "120", "--num-envs", "2", "--frame-size", "32") == 130
    monkeypatch.setattr(Progress, "update", original)
    assert cli(run, "collect", "--collect-steps", "120", "--num-envs", "2", "--frame-size", "32") == 0
    keys = episode_keys(ReplayStore.open(run / "replay"))
    assert len(set(keys)) == len(keys)


def test_the_report_states_the_run_and_its_verdicts(run):
    report = (run / "report.md").read_text()
    assert (
        "at 32×32, seed 0" in report
        and "evaluation episodes" in report
        and "of the codes of each head" in report
    )
    assert "evaluation took" in report and "replay steps" in report
    assert "copy-last" in report
    events = EventAccumulator(str(run / "agent" / "evaluation"))
    events.Reload()
    assert {"eval/agent_return", "eval/random_return"} <= set(events.Tags()["scalars"])


def test_progress_is_logged_as_lines_when_not_on_a_terminal(run, capsys):
    assert cli(run, "train-agent", "--restart", *AGENT) == 0
    assert "train-agent: 32/32 steps (100%)" in capsys.readouterr().out


def test_deterministic_runs_give_identical_reports(tmp_path):
    reports = []
    for name in ("a", "b"):
        run = tmp_path / name
        flags = ["--deterministic", *TINY, *TRAIN, "--tokenizer-steps", "2", "--context-steps", "2", *AGENT]
        flags += ["--probe-steps", "300", "--probe-episode-steps", "50"]
        assert (
            main(["demo", "--runs-dir", str(tmp_path), "--name", name, *flags, "--eval-episodes", "2"]) == 0
        )
        report = json.loads((run / "report.json").read_text())
        for timing in ("seconds", "evaluation_seconds", "stage_seconds", "name"):
            report.pop(timing)
        reports.append(report)
    assert reports[0] == reports[1]


@pytest.mark.slow
def test_rerunning_a_finished_demo_measures_again_only_what_changed(tmp_path, capsys, monkeypatch):
    demo = ["demo", "--quick", "--logdir", str(tmp_path)]
    assert main(demo) == 0
    run = tmp_path / "demo-quick"
    first = {name: digest(run / name) for name in ("report.json", "probe.json")}
    first_summary = capsys.readouterr().out.split("== aime-rl demo summary ==")[1]
    assert first_summary.lstrip().startswith("(--quick: the tiny preset")  # its numbers are a smoke run's
    assert main(demo) == 0
    out = capsys.readouterr().out
    assert out.count("(done: nothing it measures changed)") == 2 and "== aime-rl demo summary ==" in out
    summary = out.split("== aime-rl demo summary ==")[1]
    assert (
        summary.split("report:")[0] == first_summary.split("report:")[0]
    )  # the same table, in the same order
    assert "(the demo that made it took" in summary  # not this rerun's few seconds
    assert {name: digest(run / name) for name in first} == first
    evaluate = ["evaluate", "--runs-dir", str(tmp_path), "--name", "demo-quick"]
    with monkeypatch.context() as patch:  # other defaults of the probe protocol: measured again
        patch.setattr(
            evaluate_stages, "ProbeConfig", functools.partial(ProbeConfig, ridge_selection="validation")
        )
        assert main(demo) == 0
        assert "(done: nothing it measures changed)" not in capsys.readouterr().out
    with monkeypatch.context() as patch:  # the probe code of another version: measured again
        patch.setattr(evaluate_stages, "PROTOCOL_VERSION", evaluate_stages.PROTOCOL_VERSION + 1)
        assert main(demo) == 0
        assert "(done: nothing it measures changed)" not in capsys.readouterr().out
    assert main(demo) == 0 and capsys.readouterr().out.count("(done: nothing it measures changed)") == 0
    assert main(demo) == 0 and capsys.readouterr().out.count("(done: nothing it measures changed)") == 2
    assert main(evaluate) == 0  # rewrites report.json
    capsys.readouterr()
    assert (
        main(demo) == 0
    )  # the report is no longer the demo's own: evaluated again; the probe is still current
    assert capsys.readouterr().out.count("(done: nothing it measures changed)") == 1
    assert main([*demo, "--eval-episodes", "3"]) == 0  # another setting of the evaluation: evaluated again
    assert capsys.readouterr().out.count("(done: nothing it measures changed)") == 1
    assert json.loads((run / "report.json").read_text())["episodes"] == 3
    psnr = json.loads((run / "report.json").read_text())["perception"]["tokenizer"]["psnr"]
    assert main([*demo, "--eval-episodes", "3", "--decoder-steps", "20"]) == 0  # a better decoder: reported
    assert json.loads((run / "report.json").read_text())["perception"]["tokenizer"]["psnr"] != psnr


@pytest.mark.slow
def test_a_demo_reports_a_larger_probe_made_since_without_making_it_again(tmp_path, capsys):
    demo = ["demo", "--quick", "--logdir", str(tmp_path)]
    assert main(demo) == 0
    run = tmp_path / "demo-quick"
    probe = ["probe", "--runs-dir", str(tmp_path), "--name", "demo-quick"]
    assert main([*probe, "--probe-steps", "400"]) == 0  # what the summary offers: a probe of more frames
    made = digest(run / "probe.json")
    capsys.readouterr()
    assert main(demo) == 0
    out = capsys.readouterr().out
    assert (
        "probing what the context knows (400 random-policy frames) (done: nothing it measures changed)" in out
    )
    assert (
        digest(run / "probe.json") == made
        and json.loads((run / "probe.json").read_text())["num_frames"] == 400
    )
    assert "(400 probe frames: " in out  # the summary reads the larger probe
    assert (
        main([*probe, "--window", "3"]) == 0
    )  # a probe of another window than the run's: not the demo's probe
    capsys.readouterr()
    assert main(demo) == 0
    assert "(done: nothing it measures changed)" not in capsys.readouterr().out
    assert json.loads((run / "probe.json").read_text())["metadata"]["window"] == 6


@pytest.mark.slow
def test_quick_demo_runs_the_whole_pipeline(tmp_path, capsys):
    assert main(["demo", "--quick", "--logdir", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert "(foreground, the pixels that move: " in summary  # the ball's and the paddle's own PSNR
    run = tmp_path / "demo-quick"
    report = json.loads((run / "report.json").read_text())
    assert {"agent_return_mean", "random_return_mean", "perception"} <= set(report)
    assert report["perception"]["tokenizer"]["psnr"] > 0
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "agent" / "agent.zip").is_file()
    assert (run / "agent" / "observation_normalization.json").is_file()
    assert (run / "report.md").read_text().startswith("# aime-rl report")
    probe = report["probe"]  # the summary shows what the context knows, beside the baselines
    assert set(probe) == {"context", "pixels", "majority"}
    assert {"ball_x", "paddle_x", "score"} <= set(probe["context"])
    assert (
        probe["pixels"]["paddle_x"] > probe["majority"]["paddle_x"] + 0.3
    )  # the raw frame locates the paddle
    assert "What the context knows" in (run / "report.md").read_text()
    images = read_event_images(run / "context_model")
    assert any(tag.startswith("rollout/") and blobs[0].startswith(b"GIF89a") for tag, blobs in images.items())


@pytest.mark.slow
def test_world_model_and_an_agent_trained_in_imagination(run, caplog):
    assert cli(run, "train-world-model", "--world-model-steps", "3") == 0
    assert "action_dim not given" not in caplog.text  # the stage tells the VRNN the env's actions
    assert (run / "world_model" / "world_model" / "model.safetensors").is_file()
    vrnn = json.loads((run / "world_model" / "world_model" / "config.json").read_text())
    assert (vrnn["action_dim"], vrnn["discrete"]) == (3, True)  # Catch's actions, from the env itself
    assert cli(run, "train-world-model", "--world-model-steps", "3") == 0  # a no-op
    assert cli(run, "train-agent", "--in-imagination", "--agent-steps", "32") == 2  # an agent exists already
    assert cli(run, "train-agent", "--restart", "--in-imagination", "--agent-steps", "32") == 0
    assert (run / "agent" / "observation_normalization.json").is_file()  # imagined contexts, standardised
    assert json.loads((run / "agent" / "agent.json").read_text())["in_imagination"] is True
    assert cli(run, "evaluate", "--eval-episodes", "2") == 0
    assert json.loads((run / "report.json").read_text())["episodes"] == 2


@pytest.mark.slow
def test_an_installed_wheel_finds_its_experiment_files(tmp_path):
    """``pip install .`` (not editable) must run the CLI: the experiment files ship inside the package."""
    root = Path(__file__).resolve().parents[2]
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(root)], check=True
    )
    wheel = next(wheels.glob("aime_rl-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    code = (
        "import aime_rl.experiments as e, aime_rl.pipeline.config as c; "
        f"assert str(e.EXPERIMENTS_DIR).startswith({str(target)!r}), e.EXPERIMENTS_DIR; "
        "print(c.default_values(quick=True)['name'])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "demo-quick"


def test_probe_runs_end_to_end_on_a_quick_run(run, capsys):
    window = json.loads((run / "config.json").read_text())["window"]
    assert cli(run, "probe", "--probe-steps", "400", "--window", "2") == 0
    report = json.loads((run / "probe.json").read_text())
    assert "context" in json.dumps(report) and "random_cnn" in json.dumps(report)
    assert "| " in (run / "probe.md").read_text()
    assert json.loads((run / "config.json").read_text())["window"] == window  # --window chose what to probe


def test_probe_takes_the_representations_and_episode_length_it_is_given(run):
    args = (
        "--probe-steps",
        "300",
        "--probe-episode-steps",
        "15",
        "--probe-representations",
        "context,majority",
    )
    assert cli(run, "probe", *args) == 0
    report = json.loads((run / "probe.json").read_text())
    assert sorted(report["representations"]) == ["context", "majority"]
    assert report["num_episodes"] >= 300 // (15 + 1)  # a reset frame + at most 15 steps per episode


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--probe-representations", "context,pixls"), "--probe-representations"),
        (("--probe-representations", "belief"), "world model"),
        (("--probe-episode-steps", "-1"), "--probe-episode-steps"),
        (("--probe-episode-steps", "0"), "--probe-episode-steps N"),  # 100 frames of one Catch episode
    ],
)
def test_bad_probe_settings_fail_in_one_line(run, capsys, flags, named):
    assert cli(run, "probe", "--probe-steps", "100", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1


def test_the_probe_defaults_match_the_evaluation_package():
    assert PROBE_REPRESENTATIONS == DEFAULT_REPRESENTATIONS
    assert set(KNOWN_REPRESENTATIONS) == set(REPRESENTATIONS)


def test_atari_through_the_cli_with_no_manual_registration(tmp_path, capsys):
    run = tmp_path / "pong"
    assert (
        cli(run, "collect", "--env", "pong", "--frame-size", "32", "--collect-steps", "32", "--num-envs", "2")
        == 0
    )
    assert "starts from the Atari recipe" in capsys.readouterr().out  # said once, when the run is made
    store = ReplayStore.open(run / "replay")
    assert store.num_steps >= 16 and tuple(store.frame_shape) == (32, 32, 3)
    assert cli(run, "train-tokenizer", *TRAIN, "--tokenizer-steps", "1") == 0
    assert "Atari recipe" not in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["predictor_kwargs"]["motion_attention_bias"] == 0.0


def test_config_atari_on_an_existing_run_keeps_the_runs_game(tmp_path):
    run = tmp_path / "brk"
    flags = ["--frame-size", "32", "--collect-steps", "32", "--num-envs", "2"]
    assert cli(run, "collect", "--env", "breakout", *flags) == 0
    argv = ["collect", "--config", "atari", "--name", "brk", "--runs-dir", str(tmp_path), *flags]
    args = make_parser().parse_args(argv)
    config = prepare("collect", explicit_settings(args), Options(config=args.config))[0]
    assert config.env == "breakout"  # not atari.toml's example game, pong


def test_an_unknown_env_is_one_line_with_a_suggestion(tmp_path, capsys):
    assert cli(tmp_path / "r", "collect", "--env", "ALE/Pongg-v5") == 2
    err = capsys.readouterr().err
    assert "ALE/Pong-v5" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_non_image_env_points_to_its_pixel_preset(tmp_path, capsys):
    assert cli(tmp_path / "r", "collect", "--env", "CartPole-v1") == 2
    assert "cartpole_pixels" in capsys.readouterr().err


# -- resuming after the library's presets changed ------------------------------------------------------------------


def latest_checkpoint(stage_dir: Path) -> Path:
    return stage_dir / "checkpoints" / (stage_dir / "checkpoints" / "latest").read_text().strip()


@pytest.fixture
def preset_changed(monkeypatch):
    """The "tiny" preset as a later version of the library might define it: a deeper latent stack, more codes (not
    more latents: the demo's recipe, which these runs use, sets their number itself)."""
    from aime_rl.pipeline import stage_common

    def changed(name, **kwargs):
        preset = get_preset(name, **kwargs)
        return replace(
            preset,
            tokenizer=replace(preset.tokenizer, num_codes=2 * preset.tokenizer.num_codes),
            predictor=replace(
                preset.predictor, num_self_attention_layers=preset.predictor.num_self_attention_layers + 1
            ),
        )

    monkeypatch.setattr(stage_common, "get_preset", changed)


def test_a_context_checkpoint_holds_the_settings_of_the_model_it_trained(finished_run):
    checkpoint = json.loads((latest_checkpoint(finished_run / "context_model") / "config.json").read_text())
    assert checkpoint["model"] == json.loads((finished_run / "model" / "config.json").read_text())


def test_the_context_model_trains_further_after_the_preset_changed(run, preset_changed, capsys):
    trained = json.loads((run / "model" / "config.json").read_text())
    assert cli(run, "train-context", "--context-steps", "3") == 0
    out = capsys.readouterr().out
    assert "resuming the model the checkpoint holds" in out
    layers = trained["predictor"]["num_self_attention_layers"]
    assert f"predictor.num_self_attention_layers {layers}" in out
    assert json.loads((run / "model" / "config.json").read_text()) == trained
    assert json.loads((run / "stages" / "context.json").read_text())["steps"] == 3


def test_a_checkpoint_without_the_model_settings_resumes_the_finished_models(run, preset_changed):
    # checkpoints written before they carried the model's settings: {"class": ...} alone
    checkpoint = latest_checkpoint(run / "context_model")
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"] = {"class": "CausalPerceiverIO"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["config.json"] = file_digest(checkpoint / "config.json")
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    trained = json.loads((run / "model" / "config.json").read_text())
    assert cli(run, "train-context", "--context-steps", "3") == 0
    assert json.loads((run / "model" / "config.json").read_text()) == trained


def test_the_tokenizer_trains_further_after_the_preset_changed(run, preset_changed, capsys):
    trained = json.loads((run / "tokenizer" / "model" / "config.json").read_text())
    assert cli(run, "train-tokenizer", "--tokenizer-steps", "3") == 0
    assert f"num_codes {trained['num_codes']} (now {2 * trained['num_codes']})" in capsys.readouterr().out
    assert json.loads((run / "tokenizer" / "model" / "config.json").read_text()) == trained


def test_restart_trains_the_changed_presets_model(run, preset_changed):
    trained = json.loads((run / "model" / "config.json").read_text())
    assert cli(run, "train-context", "--restart") == 0
    config = json.loads((run / "model" / "config.json").read_text())
    layers = config["predictor"]["num_self_attention_layers"]
    assert layers == trained["predictor"]["num_self_attention_layers"] + 1


def test_a_partly_trained_context_model_resumes_after_the_preset_changed(run, preset_changed, capsys):
    # killed before its first finish: checkpoints, no model/ yet
    trained = json.loads((run / "model" / "config.json").read_text())
    shutil.rmtree(run / "model")
    manifest = json.loads((run / "stages" / "context.json").read_text())
    (run / "stages" / "context.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert cli(run, "train-context", "--context-steps", "3") == 0
    assert "context_model/checkpoints/step_00000002/config.json" in capsys.readouterr().out
    assert json.loads((run / "model" / "config.json").read_text()) == trained


@pytest.mark.parametrize(("steps", "every"), [(1, 1), (320, 160), (500, 250), (3000, 250)])
def test_a_stage_checkpoints_at_least_every_250_steps(steps, every):
    from aime_rl.pipeline.stage_common import trainer_config

    assert trainer_config(RunConfig(), steps).checkpoint_every == every


@pytest.mark.parametrize("window", ["0", "-3"])
def test_a_bad_probe_window_is_named_before_any_work(run, capsys, window):
    assert cli(run, "probe", "--window", window) == 2
    captured = capsys.readouterr()
    assert f"--window must be a positive integer, got {window}" in captured.err
    assert "random-policy frames" not in captured.out + captured.err  # refused before the probe began
    assert not (run / "probe.json").exists()


def test_collect_reaches_a_target_that_is_not_a_multiple_of_the_envs(tmp_path, capsys):
    run = tmp_path / "c"
    assert cli(run, "collect", "--frame-size", "32", "--collect-steps", "100", "--num-envs", "16") == 0
    assert ReplayStore.open(run / "replay").num_steps == 112  # 7 steps of 16 envs, not 6 (96 < 100)
    assert cli(run, "collect", "--collect-steps", "100") == 0
    assert "already has 112 steps (target 100)" in capsys.readouterr().out


def test_a_runs_agent_loaded_in_python_plays_as_evaluate_does(run):
    from aime_rl.pipeline import episode_returns, load_trained_agent

    report = json.loads((run / "report.json").read_text())
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()), "config")
    seed, envs = config.seed + 1000, evaluate_stages.evaluation_envs(config)  # evaluate's own envs
    agent, venv = load_trained_agent(run, n_envs=envs, seed=seed)
    assert venv.observation_space.shape == agent.observation_space.shape
    returns = episode_returns(venv, agent, report["episodes"], seed, "test", progress=False)
    venv.close()
    assert np.mean(returns) == pytest.approx(report["agent_return_mean"])


def test_loading_an_agent_from_a_directory_that_is_not_a_run_is_refused(tmp_path):
    from aime_rl.pipeline import load_trained_agent

    with pytest.raises(ValueError, match="not an aime-rl run"):
        load_trained_agent(tmp_path)
