"""The pipeline's agent stages: the agent is evaluated on the observations it was trained on."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from aime_rl.agents import NORMALIZATION_NAME, load_normalization, make_agent
from aime_rl.pipeline import RunConfig, RunDir, build_model, evaluate_stages, stages
from aime_rl.pipeline.agent_stage import steps_learn_takes
from aime_rl.pipeline.environment import make_venv
from aime_rl.pipeline.rundir import weights_fingerprint
from aime_rl.wrappers import VecContextObservation

AGENT_KWARGS = dict(n_steps=16, batch_size=32, n_epochs=1)


@pytest.fixture
def run_config(tmp_path) -> RunConfig:
    """A run with an untrained tiny perception model at 32×32 and a 32-step PPO budget on 2 envs."""
    config = RunConfig(
        name="agent",
        runs_dir=str(tmp_path),
        preset="tiny",
        frame_size=32,
        num_envs=2,
        sequence_length=4,
        window=4,
        agent_steps=32,
        eval_episodes=1,
        agent_kwargs=AGENT_KWARGS,
    )
    run = RunDir(config.run_dir)
    build_model(config).save_pretrained(run.path / "model")
    run.write_manifest(
        "context",
        {"status": "done", "steps": 0, "outputs": {"model": weights_fingerprint(run.path / "model")}},
    )
    return config


def evaluated_venvs(config: RunConfig, monkeypatch) -> list:
    """Run ``evaluate`` with short fake episodes; returns the vec envs the agent and the random policy played on."""
    seen = []

    def episode_returns(venv, policy, episodes, seed, what="", progress=True):
        seen.append(venv)
        venv.reset()
        return [0.0] * episodes

    monkeypatch.setattr(evaluate_stages, "episode_returns", episode_returns)  # what evaluate calls
    stages.evaluate(config, RunDir(config.run_dir), progress=False)
    return seen


def evaluated_venv(config: RunConfig, monkeypatch):
    """The vec env ``evaluate`` evaluated the agent on."""
    return evaluated_venvs(config, monkeypatch)[0]


def train(config: RunConfig) -> None:
    run = RunDir(config.run_dir)
    run.discard(["agent"])
    stages.train_agent_stage(config, run, progress=False)


def test_the_agent_is_evaluated_with_the_statistics_its_training_saved(run_config, monkeypatch):
    train(run_config)
    stats = run_config.run_dir / "agent" / NORMALIZATION_NAME
    assert stats.is_file() and (run_config.run_dir / "agent" / "agent.zip").is_file()
    venv = evaluated_venv(run_config, monkeypatch)
    assert isinstance(venv, VecNormalize) and not venv.training
    model = run_config.run_dir / "model"
    reference = load_normalization(
        stages.make_context_venv(run_config, model, 2, 0, run_config.window), stats
    )
    assert np.array_equal(venv.obs_rms.mean, reference.obs_rms.mean)
    assert np.array_equal(venv.obs_rms.var, reference.obs_rms.var)


def test_an_agent_trained_on_raw_contexts_is_evaluated_on_raw_contexts(run_config, monkeypatch):
    train(run_config)
    run_config.normalize_observations = False
    train(run_config)
    assert not (run_config.run_dir / "agent" / NORMALIZATION_NAME).exists()
    run_config.normalize_observations = True  # evaluation follows the saved agent, not the flag
    assert not isinstance(evaluated_venv(run_config, monkeypatch), VecNormalize)


def test_a_stale_statistics_file_is_removed(run_config):
    train(run_config)
    stale = run_config.run_dir / "agent" / NORMALIZATION_NAME
    run_config.normalize_observations = False
    learn = stages.learn_and_save
    venv = stages.make_context_venv(run_config, run_config.run_dir / "model", 2, 0, run_config.window)
    learn(run_config, RunDir(run_config.run_dir), venv, progress=False)
    assert not stale.exists()


def test_the_random_policy_plays_without_the_context_stream(run_config, monkeypatch):
    train(run_config)
    agent_venv, random_venv = evaluated_venvs(run_config, monkeypatch)
    assert isinstance(agent_venv.venv, VecContextObservation)  # under the saved standardisation
    assert not isinstance(random_venv, VecEnvWrapper)  # no stream computes contexts it would not look at
    assert random_venv.observation_space == make_venv(run_config, 1, 0).observation_space


def test_the_random_policy_scores_the_same_with_or_without_the_context_stream(run_config):
    model = run_config.run_dir / "model"
    with_stream = stages.make_context_venv(run_config, model, 2, 7, run_config.window, training=False)
    without = make_venv(run_config, 2, 7, training=False)
    returns = [evaluate_stages.episode_returns(v, None, 3, 7, progress=False) for v in (with_stream, without)]
    assert returns[0] == returns[1]


@pytest.mark.parametrize(
    ("algo", "kwargs"), [("ppo", {"n_steps": 16, "batch_size": 32}), ("a2c", {}), ("dqn", {})]
)
@pytest.mark.parametrize("steps", [40, 41])
def test_the_progress_total_is_the_steps_sb3_takes(algo, kwargs, steps):
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    agent = make_agent(algo, venv, seed=0, **kwargs)
    expected = steps_learn_takes(agent, steps)
    agent.learn(steps)
    assert agent.num_timesteps == expected >= steps
