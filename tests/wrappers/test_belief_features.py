"""Belief features ``[c_t, h_{t-1}, z_t]`` from a VRNN world model in the context wrappers.

``ContextObservation``, ``VectorContextObservation`` and ``VecContextObservation`` with ``world_model=`` run a
``VRNNFilter`` online beside the context stream. Every test uses the "tiny" perception preset (context_dim 32), a
small random VRNN (belief_dim 32 + 8) and short Catch episodes (one ball, 11–16 steps), with one torch thread.
The references are built by hand from the same frames and actions: a context stream plus a ``VRNNFilter`` that
tokenizes the frames itself (so the wrappers' reuse of the stream's tokens is checked too).
"""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model import VRNN, VRNNFilter
from aime_rl.wrappers import ContextObservation, VecContextObservation, VectorContextObservation, env_factory
from aime_rl.wrappers.core import belief_actions
from aime_rl.wrappers.models import SharedModel
from aime_rl.wrappers.preprocessing import to_model_frames
from tests.helpers import SMALL

WINDOW = 4
CONTEXT_DIM = 32
BELIEF_DIM = SMALL["hidden_dim"] + SMALL["latent_dim"]
BELIEF_ATOL = 1e-5  # the same computation as the hand-run filter
ATOL = 1e-4  # terminal observations: a forked filter and stream, compared across wrappers
SHORT_CATCH = dict(balls_per_episode=1)  # episodes of 11–16 steps
ACTIONS = np.random.default_rng(0).integers(3, size=200)


@pytest.fixture(scope="module")
def model(model_dir) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def vrnn(model) -> VRNN:
    """A random VRNN on ``model`` for Catch's 3 discrete actions (belief_dim 40)."""
    torch.manual_seed(1)
    return VRNN(model, 3, discrete=True, **SMALL).eval()


@pytest.fixture(scope="module")
def vrnn_dir(vrnn, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("vrnn")
    vrnn.save_pretrained(directory)
    return str(directory)


def short_catch(**kwargs) -> gym.Env:
    return gym.make("aime_rl/Catch-v0", **{**SHORT_CATCH, **kwargs})


def belief_env(model, vrnn, **kwargs) -> ContextObservation:
    return ContextObservation(short_catch(), model, window=WINDOW, world_model=vrnn, **kwargs)


def two_env_actions(num_steps: int) -> np.ndarray:
    return np.stack([ACTIONS[:num_steps], ACTIONS[::-1][:num_steps]], axis=1)


class HandFilter:
    """The reference for one env: a context stream and a ``VRNNFilter`` that tokenizes the frames itself."""

    def __init__(self, model: CausalPerceiverIO, vrnn: VRNN):
        self.model, self.vrnn = model, vrnn
        with torch.inference_mode():
            self.stream = model.stream(1, window=WINDOW)
        self.filter = VRNNFilter(vrnn, 1)

    def reset(self) -> None:
        with torch.inference_mode():
            self.stream.reset()
            self.filter.reset()

    def step(self, frame: np.ndarray, prev_action: int | None) -> np.ndarray:
        """Env frame ``[H, W, 3]`` uint8 and the action before it → ``[c_t, h_{t-1}, z_t]`` ``[D + H + Z]``."""
        frames = to_model_frames(frame, self.model.frame_size)  # uint8 [1, 3, 64, 64]
        with torch.inference_mode():
            context = self.stream.step(frames)
            action = None if prev_action is None else torch.tensor([prev_action])
            belief = self.filter.step(context, frames, action)
        return torch.cat([context, belief], -1)[0].numpy()


def vec_same_step(venv, actions: np.ndarray, seed: int):
    """Observations ``[T+1, N, D']`` and ``{(step, row): terminal observation}`` of an SB3 VecEnv."""
    venv.seed(seed)
    observations, terminals = [venv.reset()], {}
    for t, action in enumerate(actions):
        observation, _, done, infos = venv.step(action)
        for i in np.flatnonzero(done):
            terminals[(t, i)] = infos[i]["terminal_observation"]
        observations.append(observation)
    return np.stack(observations), terminals


def single_env_same_step(env: gym.Env, seed: int, actions) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """SB3 semantics for one env: observations ``[T+1, D']`` and ``{step: terminal observation}``."""
    observations, terminals = [env.reset(seed=seed)[0]], {}
    for t, action in enumerate(actions):
        observation, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            terminals[t] = observation
            observation, _ = env.reset()
        observations.append(observation)
    return np.stack(observations), terminals


# -- spaces ---------------------------------------------------------------------------------------------------------


def test_single_env_observation_is_context_and_belief_and_passes_check_env(model, vrnn):
    env = belief_env(model, vrnn)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (CONTEXT_DIM + BELIEF_DIM,), np.float32)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (CONTEXT_DIM + BELIEF_DIM,) and observation.dtype == np.float32
    stepped, *_ = env.step(1)
    assert env.observation_space.contains(stepped) and not np.shares_memory(stepped, observation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gymnasium_check_env(env, skip_render_check=True)
    expected = ("infinity", "wrapper applied")  # the unbounded Box and checking a wrapped env are deliberate
    unexpected = [str(w.message) for w in caught if not any(text in str(w.message) for text in expected)]
    assert not unexpected


def test_vector_wrapper_observation_is_context_and_belief(model, vrnn):
    venv = VectorContextObservation(
        gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH), model, WINDOW, world_model=vrnn
    )
    size = CONTEXT_DIM + BELIEF_DIM
    assert venv.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
    assert venv.observation_space.shape == (2, size) and venv.observation_space.dtype == np.float32
    observation, _ = venv.reset(seed=0)
    stepped, *_ = venv.step(np.array([0, 2]))
    for batch in (observation, stepped):
        assert (
            batch.shape == (2, size) and batch.dtype == np.float32 and venv.observation_space.contains(batch)
        )


def test_keep_frame_adds_a_belief_entry_equal_to_the_box_observation(model, vrnn):
    kept, flat = belief_env(model, vrnn, keep_frame=True), belief_env(model, vrnn)
    assert set(kept.observation_space.spaces) == {"context", "belief", "frame"}
    assert kept.observation_space["belief"] == gym.spaces.Box(-np.inf, np.inf, (BELIEF_DIM,), np.float32)
    observations = [(kept.reset(seed=2)[0], flat.reset(seed=2)[0])]
    observations += [(kept.step(int(a))[0], flat.step(int(a))[0]) for a in ACTIONS[:3]]
    for as_dict, as_box in observations:
        assert kept.observation_space.contains(as_dict)
        np.testing.assert_array_equal(np.concatenate([as_dict["context"], as_dict["belief"]]), as_box)


# -- equality with a filter run by hand -------------------------------------------------------------------------------


def test_single_env_belief_equals_a_hand_run_filter(model, vrnn):
    env, raw, hand = belief_env(model, vrnn), short_catch(), HandFilter(model, vrnn)
    observation, _ = env.reset(seed=4)
    frame, _ = raw.reset(seed=4)
    np.testing.assert_allclose(observation, hand.step(frame, None), rtol=0, atol=BELIEF_ATOL)
    episode_ends = 0
    for action in ACTIONS[:30]:  # through an episode end: the filter restarts with the stream
        observation, _, terminated, truncated, _ = env.step(int(action))
        frame, *_ = raw.step(int(action))
        np.testing.assert_allclose(observation, hand.step(frame, int(action)), rtol=0, atol=BELIEF_ATOL)
        if terminated or truncated:
            episode_ends += 1
            observation, _ = env.reset()
            frame, _ = raw.reset()
            hand.reset()
            np.testing.assert_allclose(observation, hand.step(frame, None), rtol=0, atol=BELIEF_ATOL)
    assert episode_ends >= 1


def test_vector_rows_belief_equals_a_hand_run_filter_per_row(model, vrnn):
    """NEXT_STEP: the step after a done is the row's reset step (its action ignored, its filter row restarted)."""
    actions = two_env_actions(34)
    venv = VectorContextObservation(
        gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH), model, WINDOW, world_model=vrnn
    )
    raw = gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH)  # the same sub-envs in lockstep, for the frames
    hands = [HandFilter(model, vrnn) for _ in range(2)]
    observations, _ = venv.reset(seed=0)
    frames, _ = raw.reset(seed=0)
    starting = np.ones(2, dtype=bool)  # rows whose current observation starts an episode
    done = np.zeros(
        2, dtype=bool
    )  # rows whose current observation ends one (the next step is the reset step)
    reset_steps = np.zeros(2, dtype=int)
    for t in range(len(actions) + 1):
        for row, hand in enumerate(hands):
            if starting[row]:
                hand.reset()
                reset_steps[row] += t > 0
            prev_action = None if starting[row] else int(actions[t - 1, row])
            expected = hand.step(frames[row], prev_action)
            np.testing.assert_allclose(observations[row], expected, rtol=0, atol=BELIEF_ATOL)
        if t == len(actions):
            break
        observations, _, terminations, truncations, _ = venv.step(actions[t])
        frames, *_ = raw.step(actions[t])
        starting, done = done, np.logical_or(terminations, truncations)
    assert (reset_steps >= 1).all()  # both rows went through an autoreset step


# -- no leak across episodes ----------------------------------------------------------------------------------------


def test_single_env_reset_equals_a_fresh_wrapper(model, vrnn):
    env = belief_env(model, vrnn)
    env.reset(seed=5)
    for action in ACTIONS[:20]:  # through at least one episode end, then into the next episode
        _, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            env.reset()
    fresh = belief_env(model, vrnn)
    observation, fresh_observation = env.reset(seed=9)[0], fresh.reset(seed=9)[0]
    np.testing.assert_allclose(observation, fresh_observation, rtol=0, atol=BELIEF_ATOL)
    for action in ACTIONS[20:24]:  # and the episode continues the same
        np.testing.assert_allclose(
            env.step(int(action))[0], fresh.step(int(action))[0], rtol=0, atol=BELIEF_ATOL
        )


def test_vector_row_that_autoresets_equals_a_fresh_single_env_wrapper(model, vrnn):
    actions = two_env_actions(40)
    venv = VectorContextObservation(
        gym.make_vec("aime_rl/Catch-v0", 2, **SHORT_CATCH), model, WINDOW, world_model=vrnn
    )
    venv.reset(seed=1)
    t, done = 0, np.zeros(2, dtype=bool)
    while not done[0]:
        _, _, terminations, truncations, _ = venv.step(actions[t])
        done = np.logical_or(terminations, truncations)
        t += 1
    # a fresh single env in the state row 0's sub-env resets from (its RNG), and a fresh wrapper around it
    fresh = belief_env(model, vrnn)
    fresh.unwrapped.np_random = copy.deepcopy(venv.unwrapped.envs[0].unwrapped.np_random)
    expected = [fresh.reset()[0]] + [fresh.step(int(a))[0] for a in actions[t + 1 : t + 5, 0]]
    got = [
        venv.step(action)[0][0] for action in actions[t : t + 5]
    ]  # reset step (action ignored), then 4 more
    np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=0, atol=BELIEF_ATOL)


def test_vector_partial_reset_restarts_only_the_masked_rows_belief(model, vrnn):
    actions = two_env_actions(8)
    venv = VectorContextObservation(gym.make_vec("aime_rl/Catch-v0", 2), model, WINDOW, world_model=vrnn)
    venv.reset(seed=0)
    for action in actions[:5]:
        before, *_ = venv.step(action)
    after, _ = venv.reset(seed=[11, None], options={"reset_mask": np.array([True, False])})
    np.testing.assert_allclose(after[0], belief_env(model, vrnn).reset(seed=11)[0], rtol=0, atol=BELIEF_ATOL)
    np.testing.assert_array_equal(after[1], before[1])
    continued = np.stack([venv.step(action)[0][1] for action in actions[5:]])
    untouched = ContextObservation(gym.make("aime_rl/Catch-v0"), model, window=WINDOW, world_model=vrnn)
    expected = [untouched.reset(seed=1)[0]] + [untouched.step(int(a))[0] for a in actions[:, 1]]
    np.testing.assert_allclose(continued, np.stack(expected)[6:], rtol=0, atol=BELIEF_ATOL)


# -- SB3 VecEnv terminal observations ---------------------------------------------------------------------------


def test_vec_terminal_observation_with_belief_equals_the_single_env_wrapper(model, vrnn):
    actions = two_env_actions(36)
    venv = VecContextObservation(
        DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 2), model, WINDOW, world_model=vrnn
    )
    observations, terminals = vec_same_step(venv, actions, seed=0)
    assert {row for _, row in terminals} == {0, 1}
    for row in range(2):
        expected, expected_terminals = single_env_same_step(belief_env(model, vrnn), row, actions[:, row])
        np.testing.assert_allclose(observations[:, row], expected, rtol=0, atol=ATOL)
        row_terminals = {t: obs for (t, i), obs in terminals.items() if i == row}
        assert row_terminals.keys() == expected_terminals.keys()
        for t, terminal in row_terminals.items():
            assert terminal.shape == (CONTEXT_DIM + BELIEF_DIM,) and terminal.dtype == np.float32
            np.testing.assert_allclose(terminal, expected_terminals[t], rtol=0, atol=ATOL)


# -- constructor arguments ------------------------------------------------------------------------------------------


def test_spec_records_the_world_model_dir_and_round_trips(model_dir, vrnn_dir):
    env = ContextObservation(short_catch(), model_dir, window=WINDOW, world_model=vrnn_dir)
    kwargs = env.spec.additional_wrappers[-1].kwargs
    assert kwargs["world_model"] == vrnn_dir and isinstance(kwargs["world_model"], str)
    env.spec.to_json()
    rebuilt = gym.make(env.spec)
    assert rebuilt.observation_space == env.observation_space
    np.testing.assert_allclose(rebuilt.reset(seed=3)[0], env.reset(seed=3)[0], rtol=0, atol=BELIEF_ATOL)


def test_registered_context_env_takes_a_world_model_dir(model_dir, vrnn_dir):
    env = gym.make(
        "aime_rl/Context-v0",
        env_id="aime_rl/Catch-v0",
        model_dir=model_dir,
        window=WINDOW,
        world_model=vrnn_dir,
    )
    direct = ContextObservation(gym.make("aime_rl/Catch-v0"), model_dir, window=WINDOW, world_model=vrnn_dir)
    assert env.observation_space.shape == (CONTEXT_DIM + BELIEF_DIM,)
    np.testing.assert_allclose(env.reset(seed=2)[0], direct.reset(seed=2)[0], rtol=0, atol=BELIEF_ATOL)
    np.testing.assert_allclose(env.step(2)[0], direct.step(2)[0], rtol=0, atol=BELIEF_ATOL)


def test_world_model_instance_is_recorded_without_deep_copy(model, vrnn):
    env = belief_env(model, vrnn)
    recorded = env.spec.additional_wrappers[-1].kwargs["world_model"]
    assert isinstance(recorded, SharedModel) and recorded.model is vrnn
    assert copy.deepcopy(env.spec).additional_wrappers[-1].kwargs["world_model"].model is vrnn
    assert gym.make(env.spec).get_wrapper_attr("world_model") is vrnn


def test_belief_actions_shift_discrete_ids_and_flatten_boxes():
    ids = belief_actions(gym.spaces.Discrete(3, start=1), np.array([1, 3]), 2)
    np.testing.assert_array_equal(ids, [0, 2])
    assert ids.dtype == np.int64
    single = belief_actions(gym.spaces.Discrete(3), [2], 1)
    np.testing.assert_array_equal(single, [2])
    boxes = belief_actions(gym.spaces.Box(-1, 1, (2, 1)), np.zeros((2, 2, 1), dtype=np.float64), 2)
    assert boxes.shape == (2, 2) and boxes.dtype == np.float32


# -- bad input --------------------------------------------------------------------------------------------------------


def make_wrapper(kind: str, model_or_dir, world_model):
    if kind == "single":
        return ContextObservation(short_catch(), model_or_dir, window=WINDOW, world_model=world_model)
    if kind == "vector":
        return VectorContextObservation(
            gym.make_vec("aime_rl/Catch-v0", 2), model_or_dir, WINDOW, world_model=world_model
        )
    return VecContextObservation(
        DummyVecEnv([short_catch] * 2), model_or_dir, WINDOW, world_model=world_model
    )


@pytest.fixture(scope="module")
def narrow_vrnn() -> VRNN:
    """A VRNN on a perception model with context_dim 16 (the wrappers' model has 32)."""
    torch.manual_seed(2)
    narrow = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), num_latent_channels=16).eval()
    return VRNN(narrow, 3, **SMALL).eval()


@pytest.mark.parametrize("kind", ["single", "vector", "sb3_vec"])
def test_world_model_with_another_context_dim_raises(model, narrow_vrnn, kind):
    assert narrow_vrnn.context_dim == 16
    with pytest.raises(ValueError, match=r"world_model has context_dim=16 .* context_dim=32"):
        make_wrapper(kind, model, narrow_vrnn)


def test_world_model_dir_with_another_context_dim_raises(model, narrow_vrnn, tmp_path):
    narrow_vrnn.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"world_model .*context_dim=16"):
        make_wrapper("single", model, str(tmp_path))


@pytest.mark.parametrize("kind", ["single", "vector", "sb3_vec"])
def test_world_model_for_other_actions_raises(model, kind):
    four_actions = VRNN(model, 4, **SMALL)
    with pytest.raises(ValueError, match=r"world_model .*Discrete\(4\)"):
        make_wrapper(kind, model, four_actions)
