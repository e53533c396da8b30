"""WorldModelEnv: Gymnasium and SB3 env checkers, PPO in imagination, replay starts, determinism."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from aime_rl.replay import ReplayStore
from aime_rl.utils.tensorboard import read_event_images
from aime_rl.world_model.env import WorldModelEnv
from aime_rl.world_model.imagination import WorldModelRolloutCallback
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import SMALL, collect_catch

OBSERVE = 3
EXPECTED_WARNINGS = (
    "infinity",  # unbounded Box(D) on purpose: the same space as the real env's context wrapper
    "not having a spec",  # built directly, not through gym.make
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ReplayStore:
    return collect_catch(tmp_path_factory.mktemp("catch_replay"), episodes=6, seed=100)


@pytest.fixture(scope="module")
def vrnn(perceiver) -> VRNN:
    torch.manual_seed(1)
    return VRNN(perceiver, 3, **SMALL).eval()


def make_env(vrnn, store, **kwargs) -> WorldModelEnv:
    kwargs = {"observe_frames": OBSERVE, "max_episode_steps": 20, "start_batch_size": 4, **kwargs}
    return WorldModelEnv(vrnn, store, **kwargs)


@pytest.mark.parametrize("include_belief", [False, True])
def test_env_checkers_pass(vrnn, store, include_belief):
    env = make_env(vrnn, store, include_belief=include_belief, render_mode="rgb_array")
    size = vrnn.context_dim + (vrnn.belief_dim if include_belief else 0)
    assert env.observation_space.shape == (size,) and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Discrete(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
        sb3_check_env(env, warn=True)
    unexpected = [
        str(w.message) for w in caught if not any(text in str(w.message) for text in EXPECTED_WARNINGS)
    ]
    assert not unexpected
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8


@pytest.mark.filterwarnings("ignore:.*infinity", "ignore:.*spec")
def test_continuous_action_space(perceiver, tmp_path):
    store = ReplayStore(tmp_path / "replay")
    rng = np.random.default_rng(0)
    for _ in range(2):
        n = 6
        store.add_episode(
            rng.integers(0, 256, (n + 1, 64, 64, 3), dtype=np.uint8),
            rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            np.zeros(n, np.float32),
            np.zeros(n, bool),
            np.zeros(n, bool),
        )
    vrnn = VRNN(perceiver, 2, discrete=False, **SMALL).eval()
    env = make_env(vrnn, store)
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (2,)
    gym_check_env(env)
    sb3_check_env(env)
    with pytest.raises(ValueError, match="action_space"):
        make_env(vrnn, store, action_space=gym.spaces.Discrete(2))


def test_resets_start_from_replay_and_are_deterministic(vrnn, store):
    env_a, env_b = make_env(vrnn, store), make_env(vrnn, store)
    obs_a, info_a = env_a.reset(seed=5)
    obs_b, info_b = env_b.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert info_a == info_b
    # the first observation is the real context of replay frame `start_row` (after OBSERVE frames)
    episode = store.episodes[info_a["episode_index"]]
    last = info_a["start_row"]
    frames = torch.from_numpy(np.array(episode.frames(last - OBSERVE + 1, last + 1))).permute(0, 3, 1, 2)[
        None
    ]
    _, context = vrnn.perceive(frames)
    np.testing.assert_allclose(obs_a, context[0, -1].numpy(), atol=1e-5)
    # same actions → same dream (sampled prior, seeded generator), across resets too
    for _ in range(2):
        for action in [0, 2, 1, 1, 0]:
            step_a, step_b = env_a.step(action), env_b.step(action)
            np.testing.assert_array_equal(step_a[0], step_b[0])
            assert step_a[1:] == step_b[1:]
        obs_a, info_a = env_a.reset()
        obs_b, info_b = env_b.reset()
        np.testing.assert_array_equal(obs_a, obs_b)
    # different seeds give different starts
    starts = {tuple(make_env(vrnn, store).reset(seed=s)[0][:4].round(5)) for s in range(4)}
    assert len(starts) > 1


def test_termination_and_truncation(perceiver, store):
    vrnn = VRNN(perceiver, 3, **SMALL).eval()
    env = make_env(vrnn, store, max_episode_steps=3)
    env.reset(seed=0)
    results = [env.step(1) for _ in range(3)]
    assert [r[2] for r in results] == [False, False, False]  # initial bias: continue
    assert [r[3] for r in results] == [False, False, True]
    assert all(0.5 <= r[4]["continue_probability"] <= 1 for r in results)
    with torch.no_grad():
        vrnn.continue_head[-1].bias.fill_(-20.0)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and info["continue_probability"] < 0.5
    assert isinstance(reward, float)


def test_ppo_trains_in_imagination(vrnn, store, tmp_path):
    env = make_env(vrnn, store, include_belief=True, max_episode_steps=16)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        tensorboard_log=str(tmp_path),
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    rollouts = WorldModelRolloutCallback(vrnn, store, every_n_steps=128, batch_size=2, observe_k=2, horizon=3)
    model.learn(total_timesteps=256, callback=rollouts)
    assert model.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert env.action_space.contains(int(action))
    # the rollout callback wrote its GIF into the PPO run's TensorBoard events
    assert rollouts.num_logged == 2
    images = read_event_images(next(tmp_path.glob("PPO_*")))
    assert "world_model/open_loop" in images
