"""ContextObservation, the Gymnasium wrapper: spaces, env checkers, streaming == offline, resets, specs, bad input.

Every test uses the "tiny" preset (context_dim 32) on short Catch episodes (one ball, 11–16 steps) and a small
attention window, with one torch thread (the CI box has two shared cores).
"""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers import ContextObservation, make_context_env, register_context_env
from aime_rl.wrappers.models import SharedModel
from aime_rl.wrappers.preprocessing import to_model_frames
from tests.wrappers.helpers import ACTIONS, ATOL, CONTEXT_DIM, WINDOW, context_env, short_catch


def test_public_names_resolve_and_registration_is_idempotent():
    import aime_rl.wrappers as wrappers

    assert all(getattr(wrappers, name) is not None for name in wrappers.__all__)
    register_context_env()
    register_context_env()
    assert wrappers.CONTEXT_ENV_ID in gym.envs.registry


def test_context_observation_space_dtype_and_fresh_arrays(model_dir):
    env = context_env(model_dir)
    reference = context_env(model_dir)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (CONTEXT_DIM,), np.float32)
    observation, _ = env.reset(seed=0)
    reference.reset(seed=0)
    assert observation.dtype == np.float32 and observation.shape == (CONTEXT_DIM,)
    assert env.model.training is False
    previous = observation
    for action in ACTIONS[:3]:
        previous[:] = 1e6  # mutating a returned observation must not leak into the next one
        observation, *_ = env.step(int(action))
        expected, *_ = reference.step(int(action))
        assert observation.dtype == np.float32 and not np.shares_memory(observation, previous)
        np.testing.assert_array_equal(observation, expected)
        previous = observation


def test_checkers_pass_on_wrapped_pixel_and_render_envs(model_dir):
    envs = [
        context_env(model_dir),
        ContextObservation(
            gym.make("aime_rl/CatchState-v0", render_mode="rgb_array"), model_dir, window=WINDOW
        ),
    ]
    for env in envs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unbounded Box warnings
            gymnasium_check_env(env, skip_render_check=True)
            sb3_check_env(env, warn=True)


def test_checkers_pass_on_cartpole_from_pixels(model_dir):
    pytest.importorskip("pygame", reason="CartPole's render() needs pygame (gymnasium[classic_control])")
    env = ContextObservation(gym.make("CartPole-v1", render_mode="rgb_array"), model_dir, window=WINDOW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gymnasium_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert env.reset(seed=0)[0].shape == (CONTEXT_DIM,)


def test_reset_restarts_the_stream(model_dir):
    env = context_env(model_dir)
    env.reset(seed=5)
    for action in ACTIONS[:20]:  # runs through at least one episode end
        _, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            env.reset()
    fresh = context_env(model_dir)
    np.testing.assert_array_equal(env.reset(seed=3)[0], fresh.reset(seed=3)[0])
    for action in ACTIONS[:5]:
        np.testing.assert_array_equal(env.step(int(action))[0], fresh.step(int(action))[0])


def test_stream_equals_offline_context_on_resized_frames(model_dir):
    """96×96 frames are resized to 64×64; the wrapper's contexts equal the offline ones on the resized video."""
    env = ContextObservation(short_catch(size=96), model_dir, window=WINDOW)
    contexts = [env.reset(seed=0)[0]]
    frames = [env.unwrapped.render()]
    for action in ACTIONS[:6]:
        contexts.append(env.step(int(action))[0])
        frames.append(env.unwrapped.render())
    assert frames[0].shape == (96, 96, 3)
    video = to_model_frames(np.stack(frames), (64, 64)).unsqueeze(0)  # [1, T, 3, 64, 64]
    with torch.no_grad():
        offline = env.model.extract_context(video, window=WINDOW)[0].numpy()
    np.testing.assert_allclose(np.stack(contexts), offline, atol=ATOL)


def test_grayscale_frames_are_expanded(model_dir):
    for keep_dim in (False, True):
        gray = gym.wrappers.GrayscaleObservation(short_catch(), keep_dim=keep_dim)
        env = ContextObservation(gray, model_dir, window=WINDOW)
        observation, _ = env.reset(seed=0)
        assert observation.shape == (CONTEXT_DIM,) and np.isfinite(observation).all()


def test_keep_frame_gives_dict_observations(model_dir):
    env = ContextObservation(short_catch(size=96), model_dir, window=WINDOW, keep_frame=True)
    observation, _ = env.reset(seed=0)
    assert set(observation) == {"context", "frame"}
    assert observation["frame"].shape == (64, 64, 3) and observation["frame"].dtype == np.uint8
    assert env.observation_space.contains(observation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gymnasium_check_env(env, skip_render_check=True)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda model_dir, tmp_path: ContextObservation(gym.make("CartPole-v1"), model_dir), "render_mode"),
        (
            lambda model_dir, tmp_path: ContextObservation(short_catch(), tmp_path / "missing"),
            "not a directory",
        ),
        (
            lambda model_dir, tmp_path: ContextObservation(short_catch(), tmp_path),
            None,
        ),  # holds no checkpoint
        (lambda model_dir, tmp_path: ContextObservation(short_catch(), model_dir, window=0), "window"),
    ],
    ids=["env-without-frames", "missing-model-dir", "dir-without-checkpoint", "zero-window"],
)
def test_bad_inputs_raise_clear_value_errors(model_dir, tmp_path, build, match):
    with pytest.raises(ValueError, match=match):
        build(model_dir, tmp_path)


def test_spec_records_a_path_and_round_trips(model_dir):
    env = context_env(model_dir)
    kwargs = env.spec.additional_wrappers[-1].kwargs
    assert kwargs["model_or_dir"] == model_dir and isinstance(kwargs["model_or_dir"], str)
    env.spec.to_json()  # JSON-serialisable: nothing but a path and scalars
    rebuilt = gym.make(env.spec)
    np.testing.assert_array_equal(rebuilt.reset(seed=1)[0], env.reset(seed=1)[0])


def test_model_instances_are_not_deep_copied(model_dir):
    model = CausalPerceiverIO.from_pretrained(model_dir)
    env = ContextObservation(short_catch(), model, window=WINDOW)
    assert env.model is model
    recorded = env.spec.additional_wrappers[-1].kwargs["model_or_dir"]
    assert isinstance(recorded, SharedModel) and recorded.model is model
    assert copy.deepcopy(env.spec).additional_wrappers[-1].kwargs["model_or_dir"].model is model
    assert gym.make(env.spec).unwrapped is not env.unwrapped


def test_registered_context_env(model_dir):
    register_context_env()
    env = gym.make("aime_rl/Context-v0", env_id="aime_rl/Catch-v0", model_dir=model_dir, window=WINDOW)
    direct = make_context_env("aime_rl/Catch-v0", model_dir, window=WINDOW)
    np.testing.assert_array_equal(env.reset(seed=2)[0], direct.reset(seed=2)[0])
    np.testing.assert_array_equal(gym.make(env.spec).reset(seed=2)[0], direct.reset(seed=2)[0])
