"""Context wrappers: Gymnasium wrapper, SB3 VecEnvWrapper, Gymnasium vector wrapper, SB3 adapter, preprocessing.

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
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.context_stream import ContextStream
from aime_rl.wrappers import (
    ContextObservation,
    GymnasiumToSB3VecEnv,
    VecContextObservation,
    VectorContextObservation,
    env_factory,
    make_context_env,
    make_context_vec_env,
    register_context_env,
)
from aime_rl.wrappers.models import SharedModel
from aime_rl.wrappers.preprocessing import frame_source_for, to_model_frames

WINDOW = 4
ATOL = 1e-4
CONTEXT_DIM = 32
SHORT_CATCH = dict(balls_per_episode=1)  # episodes of 11–16 steps
ACTIONS = np.random.default_rng(0).integers(3, size=200)


def short_catch(**kwargs) -> gym.Env:
    return gym.make("aime_rl/Catch-v0", **{**SHORT_CATCH, **kwargs})


def context_env(model_dir: str, **kwargs) -> ContextObservation:
    return ContextObservation(short_catch(**kwargs), model_dir, window=WINDOW)


def single_env_same_step(env: gym.Env, seed: int, actions) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """SB3 semantics for one env: observations ``[T+1, D]`` (reset context after an episode end) and
    ``{step: terminal context}``."""
    observations = [env.reset(seed=seed)[0]]
    terminals = {}
    for t, action in enumerate(actions):
        observation, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            terminals[t] = observation
            observation, _ = env.reset()
        observations.append(observation)
    return np.stack(observations), terminals


def single_env_next_step(env: gym.Env, seed: int, actions) -> np.ndarray:
    """Gymnasium NEXT_STEP semantics for one env: the step after an episode end returns the reset context."""
    observations = [env.reset(seed=seed)[0]]
    done = False
    for action in actions:
        if done:
            observation, _ = env.reset()
            done = False
        else:
            observation, _, terminated, truncated, _ = env.step(int(action))
            done = terminated or truncated
        observations.append(observation)
    return np.stack(observations)


def vec_same_step(venv, actions: np.ndarray, seed: int = 0):
    """Observations ``[T+1, N, D]``, dones ``[T, N]`` and ``{(step, row): terminal observation}`` of an SB3 VecEnv."""
    venv.seed(seed)
    observations = [venv.reset()]
    dones, terminals = [], {}
    for t, action in enumerate(actions):
        observation, _, done, infos = venv.step(action)
        for i in np.flatnonzero(done):
            terminals[(t, i)] = infos[i]["terminal_observation"]
        observations.append(observation)
        dones.append(done)
    return np.stack(observations), np.stack(dones), terminals


def two_env_actions(num_steps: int) -> np.ndarray:
    return np.stack([ACTIONS[:num_steps], ACTIONS[::-1][:num_steps]], axis=1)


def test_public_names_resolve_and_registration_is_idempotent():
    import aime_rl.wrappers as wrappers

    assert all(getattr(wrappers, name) is not None for name in wrappers.__all__)
    register_context_env()
    register_context_env()
    assert wrappers.CONTEXT_ENV_ID in gym.envs.registry


# ------------------------------------------------------------------------------------------------- preprocessing
def test_to_model_frames_shapes_channels_and_resizing():
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    frames = to_model_frames(rgb, (64, 64))
    assert frames.dtype == torch.uint8 and frames.shape == (2, 3, 64, 64)
    assert torch.equal(frames, torch.from_numpy(rgb).permute(0, 3, 1, 2))  # same size: no resampling
    assert to_model_frames(rgb[0], (64, 64)).shape == (1, 3, 64, 64)
    big = np.full((96, 96, 3), 200, dtype=np.uint8)
    assert torch.all(to_model_frames(big, (64, 64)) == 200)  # antialiased resize keeps a flat colour
    gray = rgb[0, :, :, 0]
    for frame in (gray, gray[..., None]):
        expanded = to_model_frames(frame, (64, 64))
        assert expanded.shape == (1, 3, 64, 64) and torch.equal(expanded[:, 0], expanded[:, 2])
    rgba = np.concatenate([rgb[0], np.zeros((64, 64, 1), np.uint8)], axis=-1)  # or 4 stacked grey frames
    with pytest.raises(ValueError, match="got 4 channels: stacked frames and RGBA frames are not supported"):
        to_model_frames(rgba, (64, 64))
    with pytest.raises(ValueError, match="uint8"):
        to_model_frames(rgb.astype(np.float32), (64, 64))
    with pytest.raises(ValueError, match="shape"):
        to_model_frames(np.zeros((2, 64, 64, 5), np.uint8), (64, 64))


def test_frame_source_from_observation_or_render():
    assert frame_source_for(short_catch()) == "observation"
    assert frame_source_for(gym.make("aime_rl/CatchState-v0", render_mode="rgb_array")) == "render"
    with pytest.raises(ValueError, match="render_mode"):
        frame_source_for(gym.make("aime_rl/CatchState-v0"))


# ------------------------------------------------------------------------------------------------- ContextObservation
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


def test_bad_inputs_raise_clear_value_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="render_mode"):
        ContextObservation(gym.make("CartPole-v1"), model_dir)
    with pytest.raises(ValueError, match="not a directory"):
        ContextObservation(short_catch(), tmp_path / "missing")
    with pytest.raises(ValueError):
        ContextObservation(short_catch(), tmp_path)  # exists, but holds no checkpoint
    with pytest.raises(ValueError, match="window"):
        ContextObservation(short_catch(), model_dir, window=0)


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


# ------------------------------------------------------------------------------------------------- SB3 VecEnv wrapper
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
    from aime_rl.world_model import VRNN

    from .test_vrnn import SMALL

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


# ------------------------------------------------------------------------------------------------- Gymnasium vector
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


# -- belief features from the world model --------------------------------------------------------------------------


def test_world_model_belief_is_appended_and_restarts_per_episode(model_dir):
    from aime_rl.world_model import VRNN

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
