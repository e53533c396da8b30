"""The pipeline's agent stages: the agent is evaluated on the observations it was trained on."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecNormalize

from aime_rl.agents import NORMALIZATION_NAME, load_normalization
from aime_rl.training import pipeline
from aime_rl.training.pipeline import RunConfig

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
    pipeline.save_model(pipeline.build_model(config), config.run_dir)
    return config


def evaluated_venv(config: RunConfig, monkeypatch):
    """Run ``evaluate`` with short fake episodes; returns the vec env the agent was evaluated on."""
    seen = []

    def episode_returns(venv, policy, episodes, seed):
        seen.append(venv)
        venv.reset()
        return [0.0] * episodes

    monkeypatch.setattr(pipeline, "episode_returns", episode_returns)
    pipeline.evaluate(config, config.run_dir / "model", agent=None)
    return seen[0]


def test_the_agent_is_evaluated_with_the_statistics_its_training_saved(run_config, monkeypatch):
    pipeline.train_agent(run_config, run_config.run_dir / "model")
    stats = run_config.run_dir / "agent" / NORMALIZATION_NAME
    assert stats.is_file() and (run_config.run_dir / "agent" / "agent.zip").is_file()
    venv = evaluated_venv(run_config, monkeypatch)
    assert isinstance(venv, VecNormalize) and not venv.training
    reference = load_normalization(
        pipeline.make_context_venv(run_config, run_config.run_dir / "model"), stats
    )
    assert np.array_equal(venv.obs_rms.mean, reference.obs_rms.mean)
    assert np.array_equal(venv.obs_rms.var, reference.obs_rms.var)


def test_an_agent_trained_on_raw_contexts_is_evaluated_on_raw_contexts(run_config, monkeypatch):
    pipeline.train_agent(run_config, run_config.run_dir / "model")  # leaves a statistics file behind
    run_config.normalize_observations = False
    pipeline.train_agent(run_config, run_config.run_dir / "model")
    assert not (run_config.run_dir / "agent" / NORMALIZATION_NAME).exists()  # the stale one is gone
    run_config.normalize_observations = True  # evaluation follows the saved agent, not the flag
    assert not isinstance(evaluated_venv(run_config, monkeypatch), VecNormalize)
