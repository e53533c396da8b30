"""VecContextObservation, the SB3 VecEnvWrapper: equal to single-env wrappers (terminal observations included),
subprocess envs, rendered frames, belief features, PPO.

Every test uses the "tiny" preset (context_dim 32) on short Catch episodes (one ball, 11–16 steps) and a small
attention window, with one torch thread (the CI box has two shared cores).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.context_stream import ContextStream
from aime_rl.world_model import VRNN
from aime_rl.wrappers import ContextObservation, VecContextObservation, env_factory, make_context_vec_env
from tests.helpers import SMALL
from tests.wrappers.helpers import (
    ACTIONS,
    ATOL,
    CONTEXT_DIM,
    SHORT_CATCH,
    WINDOW,
    context_env,
    short_catch,
    single_env_same_step,
    two_env_actions,
    vec_same_step,
)


def test_vec_wrapper_equals_single_env_wrappers_with_terminal_observations(model_dir):
    actions = two_env_actions(36)
    venv = VecContextObservation(
        DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 2), model_dir, WINDOW
    )
    assert venv.observation_space == gym.spaces.Box(-np.inf, np.inf, (CONTEXT_DIM,), np.float32)
    observations, dones, terminals = vec_same_step(venv, actions, seed=0)
    assert observations.dtype == np.float32 and dones[:, 0].any() and dones[:, 1].any()
    for row in range(2):
        expected, expected_terminals = single_env_same_step(context_env(model_dir), row, actions[:, row])
        np.testing.assert_allclose(observations[:, row], expected, atol=ATOL)
        row_terminals = {t: obs for (t, i), obs in terminals.items() if i == row}
        assert row_terminals.keys() == expected_terminals.keys()
        for t, terminal in row_terminals.items():
            assert terminal.shape == (CONTEXT_DIM,) and terminal.dtype == np.float32
            np.testing.assert_allclose(terminal, expected_terminals[t], atol=ATOL)


def test_vec_terminal_contexts_step_only_the_done_rows(model_dir, monkeypatch):
    """Three envs with different episode lengths: an env step with k dones runs a k-row stream step (the done rows,
    on their terminal frames) and one num_envs-row step of the wrapper's own stream; the results are exact."""
    calls = []
    step = ContextStream.step

    def recording_step(stream, frames):
        calls.append((stream, frames.shape[0]))
        return step(stream, frames)

    actions = np.stack([ACTIONS[:40], ACTIONS[::-1][:40], ACTIONS[50:90]], axis=1)
    venv = VecContextObservation(
        DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 3), model_dir, WINDOW
    )
    venv.seed(0)
    venv.reset()
    monkeypatch.setattr(ContextStream, "step", recording_step)
    terminals, done_counts = {}, set()
    for t, action in enumerate(actions):
        calls.clear()
        _, _, done, infos = venv.step(action)
        k = int(done.sum())
        expected = [k, 3] if k else [3]
        assert [rows for _, rows in calls] == expected
        assert calls[-1][0] is venv._stream and all(stream is not venv._stream for stream, _ in calls[:-1])
        terminals.update({(t, i): infos[i]["terminal_observation"] for i in np.flatnonzero(done)})
        done_counts.add(k)
    monkeypatch.undo()
    assert 1 in done_counts  # some steps end a strict subset of the episodes
    for row in range(3):
        _, expected_terminals = single_env_same_step(context_env(model_dir), row, actions[:, row])
        row_terminals = {t: obs for (t, i), obs in terminals.items() if i == row}
        assert row_terminals.keys() == expected_terminals.keys() and row_terminals
        for t, terminal in row_terminals.items():
            np.testing.assert_allclose(terminal, expected_terminals[t], atol=ATOL)


class ActionsFromOne(gym.ActionWrapper):
    """Catch with ``Discrete(3, start=1)`` actions (id ``a`` is Catch's ``a - 1``)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(3, start=1)

    def action(self, action):
        return int(action) - 1


def test_vec_belief_filter_gets_actions_shifted_to_start_at_zero(model_dir):
    """With ``Discrete(3, start=1)`` the filter sees ids from 0: the same beliefs (also terminal ones) as plain
    Catch driven by the same moves."""
    model = CausalPerceiverIO.from_pretrained(model_dir).eval()
    torch.manual_seed(1)
    vrnn = VRNN(model, 3, discrete=True, **SMALL).eval()
    actions = two_env_actions(30)

    def run(wrappers: tuple, offset: int):
        factory = env_factory("aime_rl/Catch-v0", wrappers=wrappers, **SHORT_CATCH)
        venv = VecContextObservation(DummyVecEnv([factory] * 2), model, WINDOW, world_model=vrnn)
        return vec_same_step(venv, actions + offset, seed=0)

    observations, dones, terminals = run((ActionsFromOne,), offset=1)
    expected, expected_dones, expected_terminals = run((), offset=0)
    assert dones.any() and terminals.keys() == expected_terminals.keys()
    np.testing.assert_array_equal(dones, expected_dones)
    np.testing.assert_allclose(observations, expected, rtol=0, atol=1e-6)
    for key, terminal in terminals.items():
        np.testing.assert_allclose(terminal, expected_terminals[key], rtol=0, atol=1e-6)


def test_subproc_vec_env_matches_dummy_and_has_no_leak(model_dir):
    actions = two_env_actions(24)
    factories = [env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 2
    subproc = VecContextObservation(SubprocVecEnv(factories, start_method="fork"), model_dir, WINDOW)
    try:
        observations, dones, terminals = vec_same_step(subproc, actions, seed=0)
        again = subproc.reset()  # seeds were consumed: check the first obs of a re-seeded reset instead
        subproc.seed(7)
        reseeded = subproc.reset()
    finally:
        subproc.close()
    dummy = VecContextObservation(DummyVecEnv(factories), model_dir, WINDOW)
    expected, expected_dones, expected_terminals = vec_same_step(dummy, actions, seed=0)
    np.testing.assert_allclose(observations, expected, atol=ATOL)
    np.testing.assert_array_equal(dones, expected_dones)
    for key, terminal in terminals.items():
        np.testing.assert_allclose(terminal, expected_terminals[key], atol=ATOL)
    assert again.shape == (2, CONTEXT_DIM)
    for row in range(2):
        fresh = context_env(model_dir).reset(seed=7 + row)[0]
        np.testing.assert_allclose(reseeded[row], fresh, atol=ATOL)


def test_vec_wrapper_on_rendered_frames(model_dir):
    """State-based env: exact with the frame in the observation; get_images() loses terminal frames (warned)."""
    actions = two_env_actions(20)
    render = dict(render_mode="rgb_array", **SHORT_CATCH)
    exact = make_context_vec_env("aime_rl/CatchState-v0", model_dir, n_envs=2, window=WINDOW, **render)
    observations, _, terminals = vec_same_step(exact, actions, seed=0)
    single = ContextObservation(gym.make("aime_rl/CatchState-v0", **render), model_dir, window=WINDOW)
    expected, expected_terminals = single_env_same_step(single, 0, actions[:, 0])
    np.testing.assert_allclose(observations[:, 0], expected, atol=ATOL)
    for t, terminal in expected_terminals.items():
        np.testing.assert_allclose(terminals[(t, 0)], terminal, atol=ATOL)

    lossy = VecContextObservation(
        DummyVecEnv([env_factory("aime_rl/CatchState-v0", **render)] * 2), model_dir, WINDOW
    )
    with pytest.warns(UserWarning, match="terminal frame is lost"):
        lossy_observations, _, lossy_terminals = vec_same_step(lossy, actions, seed=0)
    np.testing.assert_allclose(lossy_observations, observations, atol=ATOL)
    assert all(terminal.shape == (CONTEXT_DIM,) for terminal in lossy_terminals.values())


def test_vec_wrapper_rejects_envs_without_frames(model_dir):
    with pytest.raises(ValueError, match="render_mode"):
        VecContextObservation(DummyVecEnv([lambda: gym.make("CartPole-v1")]), model_dir)


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_ppo_trains_saves_and_loads_on_vec_context_env(model_dir, tmp_path, vec_env_cls):
    vec_env_kwargs = {"start_method": "fork"} if vec_env_cls is SubprocVecEnv else None  # fork: fast start
    venv = make_context_vec_env(
        "aime_rl/Catch-v0",
        model_dir,
        n_envs=2,
        window=WINDOW,
        vec_env_cls=vec_env_cls,
        vec_env_kwargs=vec_env_kwargs,
        seed=0,
        **SHORT_CATCH,
    )
    try:
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=256)
        assert model.num_timesteps >= 256
        model.save(tmp_path / "ppo")
        loaded = PPO.load(tmp_path / "ppo", device="cpu")
        observation = venv.reset()
        np.testing.assert_array_equal(
            loaded.predict(observation, deterministic=True)[0],
            model.predict(observation, deterministic=True)[0],
        )
    finally:
        venv.close()


def test_world_model_belief_is_appended_and_restarts_per_episode(model_dir):
    model = CausalPerceiverIO.from_pretrained(model_dir).eval()
    vrnn = VRNN(model, action_dim=3, discrete=True).eval()

    def make():
        return VecContextObservation(
            DummyVecEnv([short_catch, short_catch]), model, window=4, world_model=vrnn
        )

    venv = make()
    assert venv.observation_space.shape == (model.context_dim + vrnn.belief_dim,)
    venv.seed(3)
    first = venv.reset()
    assert first.shape == (2, model.context_dim + vrnn.belief_dim) and first.dtype == np.float32
    saw_terminal = False
    for _ in range(40):
        obs, _, dones, infos = venv.step(np.array([0, 2]))
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == first.shape[1:]
            saw_terminal = True
    assert saw_terminal
    fresh = make()
    fresh.seed(3)
    venv.seed(3)
    assert np.allclose(venv.reset(), fresh.reset(), atol=1e-5)
    PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0).learn(32)


def test_reset_context_restarts_the_context_and_the_belief_as_at_an_episode_start(model_dir):
    model = CausalPerceiverIO.from_pretrained(model_dir).eval()
    vrnn = VRNN(model, action_dim=3, discrete=True).eval()
    venvs = [
        VecContextObservation(DummyVecEnv([short_catch, short_catch]), model, window=4, world_model=vrnn)
        for _ in range(2)
    ]
    for venv in venvs:
        venv.seed(3)
        venv.reset()
        for _ in range(5):
            venv.step(np.array([0, 2]))
    restarted, fresh = venvs
    restarted.reset_context()
    fresh._core.start()  # a new stream and belief filter: every row starts again at the next frame
    after_restart, after_start = (venv.step(np.array([1, 1]))[0] for venv in venvs)
    assert np.allclose(after_restart, after_start, atol=1e-5)
    for venv in venvs:
        venv.close()


def test_no_envs_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="n_envs must be >= 1, got 0"):
        make_context_vec_env("catch", model_dir, n_envs=0)
