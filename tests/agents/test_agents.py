"""SB3 glue: agent builders, eval callback, context stacking, the perception features extractor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.agents import (
    PerceptionFeaturesExtractor,
    make_agent,
    make_eval_callback,
    perception_policy_kwargs,
    stack_contexts,
)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers import ContextObservation, env_factory, make_context_vec_env

WINDOW = 4
CONTEXT_DIM = 32
SHORT_CATCH = dict(balls_per_episode=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random CausalPerceiverIO checkpoint (64×64 frames, context_dim 32, dropout 0.1 to see modes)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("perceiver")
    CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), dropout=0.1).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def context_venv(model_dir):
    return make_context_vec_env("aime_rl/Catch-v0", model_dir, n_envs=2, window=WINDOW, seed=0, **SHORT_CATCH)


class ContinuousPaddle(gym.ActionWrapper):
    """Catch with a continuous action in [-1, 1] (left / stay / right by thirds), for SAC."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def action(self, action: np.ndarray) -> int:
        return int(np.digitize(float(action[0]), [-1 / 3, 1 / 3]))


def test_make_agent_defaults_and_overrides(context_venv):
    agent = make_agent("ppo", context_venv, n_steps=32, batch_size=64, policy_kwargs=dict(net_arch=[16]))
    assert isinstance(agent, PPO) and agent.n_steps == 32
    assert agent.policy.net_arch == [16] and agent.device.type == "cpu"
    assert agent.observation_space.shape == (CONTEXT_DIM,)
    assert type(make_agent("a2c", context_venv)).__name__ == "A2C"
    assert type(make_agent("DQN", context_venv, buffer_size=1_000)).__name__ == "DQN"


@pytest.mark.parametrize(
    ("algo", "match"),
    [("trpo", "unknown algo"), ("sac", "SAC needs a Box action space")],
    ids=["unknown-algo", "sac-on-discrete-actions"],
)
def test_make_agent_rejects_unknown_algos_and_action_spaces(context_venv, algo, match):
    with pytest.raises(ValueError, match=match):
        make_agent(algo, context_venv)


def test_sac_and_dqn_learn_a_few_steps(model_dir):
    sac_env = ContinuousPaddle(
        ContextObservation(gym.make("aime_rl/Catch-v0", **SHORT_CATCH), model_dir, WINDOW)
    )
    sac = make_agent("sac", sac_env, learning_starts=16, batch_size=16, buffer_size=1_000, seed=0)
    sac.learn(total_timesteps=48)
    dqn_env = ContextObservation(gym.make("aime_rl/Catch-v0", **SHORT_CATCH), model_dir, WINDOW)
    dqn = make_agent("dqn", dqn_env, learning_starts=16, batch_size=16, buffer_size=1_000, seed=0)
    dqn.learn(total_timesteps=48)
    assert sac.num_timesteps == 48 and dqn.num_timesteps == 48


def test_eval_callback_runs_during_training(model_dir, context_venv, tmp_path):
    eval_env = make_context_vec_env(
        "aime_rl/Catch-v0", model_dir, n_envs=1, window=WINDOW, seed=100, **SHORT_CATCH
    )
    callback = make_eval_callback(
        eval_env, eval_every=64, n_train_envs=2, n_eval_episodes=1, log_path=tmp_path
    )
    assert isinstance(callback, EvalCallback) and callback.eval_freq == 32
    agent = make_agent("ppo", context_venv, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    agent.learn(total_timesteps=128, callback=callback)
    assert len(callback.evaluations_results) >= 1 and np.isfinite(callback.last_mean_reward)
    assert (tmp_path / "evaluations.npz").is_file()


def test_stack_contexts(context_venv):
    stacked = stack_contexts(context_venv, 3)
    observation = stacked.reset()
    assert observation.shape == (2, 3 * CONTEXT_DIM) and observation.dtype == np.float32
    np.testing.assert_array_equal(observation[:, : 2 * CONTEXT_DIM], 0)  # zero history after reset
    for _ in range(20):  # through an episode end: terminal observations are stacked too
        observation, _, dones, infos = stacked.step(np.ones(2, dtype=np.int64))
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == (3 * CONTEXT_DIM,)
    with pytest.raises(ValueError, match="vector observations"):
        stack_contexts(VecFrameStack(DummyVecEnv([env_factory("aime_rl/Catch-v0")]), 2), 2)


def test_perception_features_extractor_keeps_weights_and_eval_mode(model_dir):
    frames = VecFrameStack(DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 2), n_stack=3)
    policy_kwargs = perception_policy_kwargs(model_dir, algo="ppo", window=3, net_arch=[16])
    assert policy_kwargs["ortho_init"] is False
    agent = PPO(
        "CnnPolicy", frames, policy_kwargs=policy_kwargs, n_steps=16, batch_size=32, n_epochs=1, seed=0
    )
    extractor = agent.policy.features_extractor
    assert isinstance(extractor, PerceptionFeaturesExtractor) and extractor.features_dim == CONTEXT_DIM
    pretrained = CausalPerceiverIO.from_pretrained(model_dir).state_dict()
    for name, tensor in extractor.perception.state_dict().items():  # ortho_init=False: nothing re-initialised
        torch.testing.assert_close(tensor.cpu(), pretrained[name], msg=name)  # SB3 puts it on a GPU if any

    agent.policy.set_training_mode(True)
    assert agent.policy.training and extractor.training and not extractor.perception.training
    assert not any(module.training for module in extractor.perception.modules())
    agent.learn(total_timesteps=32)  # joint fine-tuning: the RL loss moves the perception weights
    assert not extractor.perception.training
    changed = [
        name
        for name, tensor in extractor.perception.state_dict().items()
        if tensor.is_floating_point() and not torch.equal(tensor.cpu(), pretrained[name])
    ]
    assert changed


def test_perception_features_extractor_keeps_frozen_embeddings_frozen(tmp_path):
    CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), frozen_embeddings=True).save_pretrained(
        tmp_path
    )
    space = gym.spaces.Box(0, 255, shape=(6, 64, 64), dtype=np.uint8)
    predictor = PerceptionFeaturesExtractor(space, str(tmp_path), trainable=True).perception.predictor
    assert not any(p.requires_grad for p in predictor.input_adapter.parameters())
    assert all(p.requires_grad for p in predictor.encoder.parameters())


def test_perception_features_extractor_shapes_and_train_mode_option(model_dir):
    space = gym.spaces.Box(0, 255, shape=(96, 96, 6), dtype=np.uint8)  # channels-last, 2 frames, resized
    extractor = PerceptionFeaturesExtractor(space, model_dir, train_perception_mode=True)
    features = extractor(torch.rand(2, 96, 96, 6))
    assert features.shape == (2, CONTEXT_DIM)
    extractor.train(True)
    assert extractor.perception.training
    with pytest.raises(ValueError, match="3k channels"):
        PerceptionFeaturesExtractor(gym.spaces.Box(0, 255, shape=(4, 64, 64), dtype=np.uint8), model_dir)
