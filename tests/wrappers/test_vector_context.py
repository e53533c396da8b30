"""VectorContextObservation, the Gymnasium vector wrapper, and GymnasiumToSB3VecEnv: NEXT_STEP autoreset equal to
single-env wrappers, async == sync, partial resets, SB3 semantics through the adapter, PPO.

Every test uses the "tiny" preset (context_dim 32) on short Catch episodes (one ball, 11–16 steps) and a small
attention window, with one torch thread (the CI box has two shared cores).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.wrappers import GymnasiumToSB3VecEnv, VecContextObservation, VectorContextObservation
from tests.wrappers.helpers import (
    ATOL,
    CONTEXT_DIM,
    SHORT_CATCH,
    WINDOW,
    context_env,
    single_env_next_step,
    single_env_same_step,
    two_env_actions,
    vec_same_step,
)


def test_vector_wrapper_next_step_equals_single_env_wrappers(model_dir):
    actions = two_env_actions(36)
    venv = VectorContextObservation(gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH), model_dir, WINDOW)
    assert venv.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (CONTEXT_DIM,), np.float32)
    observations = [venv.reset(seed=0)[0]]
    for action in actions:
        observation, *_ = venv.step(action)
        assert observation.dtype == np.float32 and venv.observation_space.contains(observation)
        observations.append(observation)
    observations = np.stack(observations)
    for row in range(2):
        expected = single_env_next_step(context_env(model_dir), row, actions[:, row])
        np.testing.assert_allclose(observations[:, row], expected, atol=ATOL)


def test_vector_wrapper_over_async_vector_env_matches_sync(model_dir):
    actions = two_env_actions(20)
    results = []
    for mode in ("sync", "async"):
        env = gym.make_vec("aime_rl/Catch-v0", 2, vectorization_mode=mode, **SHORT_CATCH)
        venv = VectorContextObservation(env, model_dir, WINDOW)
        observations = [venv.reset(seed=0)[0]] + [venv.step(action)[0] for action in actions]
        venv.close()
        results.append(np.stack(observations))
    np.testing.assert_allclose(results[1], results[0], atol=ATOL)


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_vector_wrapper_rejects_other_autoreset_modes(model_dir, mode):
    env = gym.make_vec("aime_rl/Catch-v0", 2, vector_kwargs={"autoreset_mode": mode})
    with pytest.raises(ValueError, match=mode.name):
        VectorContextObservation(env, model_dir, WINDOW)


def test_vector_wrapper_partial_reset_keeps_other_rows(model_dir):
    actions = two_env_actions(8)
    venv = VectorContextObservation(gym.make_vec("aime_rl/Catch-v0", 2), model_dir, WINDOW)
    venv.reset(seed=0)
    for action in actions[:5]:
        before, *_ = venv.step(action)
    after, _ = venv.reset(seed=[11, None], options={"reset_mask": np.array([True, False])})
    np.testing.assert_allclose(after[0], context_env(model_dir).reset(seed=11)[0], atol=ATOL)
    np.testing.assert_array_equal(after[1], before[1])
    continued = np.stack([venv.step(action)[0] for action in actions[5:]])
    row_one = context_env(model_dir)
    expected = single_env_next_step(row_one, 1, actions[:, 1])[6:]  # row 1 never saw the partial reset
    np.testing.assert_allclose(continued[:, 1], expected, atol=ATOL)


def test_gymnasium_to_sb3_adapter_gives_same_step_semantics(model_dir):
    actions = two_env_actions(36)
    adapted = GymnasiumToSB3VecEnv(
        VectorContextObservation(gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH), model_dir, WINDOW)
    )
    observations, dones, terminals = vec_same_step(adapted, actions, seed=0)
    assert dones.any()
    for row in range(2):
        expected, expected_terminals = single_env_same_step(context_env(model_dir), row, actions[:, row])
        np.testing.assert_allclose(observations[:, row], expected, atol=ATOL)
        for t, terminal in expected_terminals.items():
            np.testing.assert_allclose(terminals[(t, row)], terminal, atol=ATOL)
    # the other order: the SB3 wrapper over the adapted raw pixel vector env
    stacked = VecContextObservation(
        GymnasiumToSB3VecEnv(gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH)), model_dir, WINDOW
    )
    np.testing.assert_allclose(vec_same_step(stacked, actions, seed=0)[0], observations, atol=ATOL)


def test_ppo_trains_on_gymnasium_vector_env(model_dir):
    vector_env = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH)
    )
    venv = GymnasiumToSB3VecEnv(VectorContextObservation(vector_env, model_dir, WINDOW))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert len(model.ep_info_buffer) > 0  # episode statistics reached SB3 through the split infos
