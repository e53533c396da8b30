"""Built-in Catch env: API checks, determinism, hidden velocity, solvability."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from aime_rl.envs import CatchEnv
from aime_rl.envs.catch import ACTION_STAY

Policy = Callable[[CatchEnv, np.random.Generator], int]


def rollout_frames(env: gym.Env, seed: int, actions: list[int]) -> list[np.ndarray]:
    """Frames ``[64, 64, 3]`` from reset and after each action (restarting on episode end)."""
    env.reset(seed=seed)
    frames = [env.render()]
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        frames.append(env.render())
    return frames


def reward_per_ball(policy: Policy, episodes: int = 20) -> float:
    """Mean reward per dropped ball (+1 caught, −1 missed) of ``policy(env, rng) -> action``."""
    env = CatchEnv(obs_type="state")
    rng = np.random.default_rng(0)
    total, balls = 0.0, 0
    for episode in range(episodes):
        env.reset(seed=episode)
        terminated = False
        while not terminated:
            _, reward, terminated, _, _ = env.step(policy(env, rng))
            total += reward
        balls += env.balls_per_episode
    return total / balls


# ------------------------------------------------------------------------------------------------- API checks


@pytest.mark.parametrize("env_id", ["aime_rl/Catch-v0", "aime_rl/CatchState-v0"])
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    gymnasium_check_env(env.unwrapped)
    sb3_check_env(env.unwrapped, warn=True)
    sb3_check_env(env, warn=True)


def test_spaces_and_render_in_both_obs_types():
    pixels, state = CatchEnv(obs_type="pixels"), CatchEnv(obs_type="state")
    assert pixels.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert state.observation_space.shape == (5,) and state.observation_space.dtype == np.float32
    assert pixels.action_space == gym.spaces.Discrete(3)
    frame_from_obs, _ = pixels.reset(seed=3)
    state.reset(seed=3)
    np.testing.assert_array_equal(state.render(), frame_from_obs)
    assert state.render().shape == (64, 64, 3) and state.render().dtype == np.uint8


def test_observations_stay_in_space_and_are_fresh_arrays():
    for obs_type in ("pixels", "state"):
        env = CatchEnv(obs_type=obs_type)
        rng = np.random.default_rng(0)
        previous, _ = env.reset(seed=0)
        for _ in range(1_000):
            observation, _, terminated, _, _ = env.step(int(rng.integers(3)))
            assert env.observation_space.contains(observation)
            assert not np.shares_memory(observation, previous)
            previous = observation if not terminated else env.reset()[0]
    frame = env.render()
    frame[...] = 0
    assert env.render().any(), "render() must not hand out its internal buffer"


def test_episode_is_made_of_several_balls_and_terminates():
    env = CatchEnv(obs_type="state")
    env.reset(seed=0)
    steps, scored, terminated = 0, 0, False
    while not terminated:
        _, reward, terminated, truncated, info = env.step(ACTION_STAY)
        assert not truncated
        steps += 1
        scored += reward != 0
    assert scored == env.balls_per_episode == 10
    assert 100 <= steps <= 200
    assert info["balls_left"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(obs_type="rgb"), "obs_type"),
        (dict(render_mode="human"), "render_mode"),
        (dict(fall_speed_range=(2.0, 1.0)), "fall_speed_range"),
    ],
    ids=["obs_type", "render_mode", "fall_speed_range"],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CatchEnv(**kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda env: env.step(3), "action"),
        (lambda env: env.reset(seed=0, options={"ball_velocity": (0.0, -1.0)}), "ball_velocity"),
    ],
    ids=["step-action", "reset-ball_velocity"],
)
def test_bad_step_and_reset_arguments_raise_value_error_naming_them(call, match):
    env = CatchEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        call(env)


# ---------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("obs_type", ["pixels", "state"])
def test_same_seed_same_frames_different_seed_different_frames(obs_type):
    actions = [int(a) for a in np.random.default_rng(0).integers(3, size=400)]  # spans several episodes
    first = rollout_frames(CatchEnv(obs_type=obs_type), seed=7, actions=actions)
    again = rollout_frames(CatchEnv(obs_type=obs_type), seed=7, actions=actions)
    other = rollout_frames(CatchEnv(obs_type=obs_type), seed=8, actions=actions)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_registered_env_is_deterministic_under_seed():
    actions = [int(a) for a in np.random.default_rng(1).integers(3, size=200)]
    first = rollout_frames(gym.make("aime_rl/Catch-v0"), seed=3, actions=actions)
    again = rollout_frames(gym.make("aime_rl/Catch-v0"), seed=3, actions=actions)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


# -------------------------------------------------------------------------------------------- hidden motion


def test_one_frame_does_not_determine_where_the_ball_lands():
    """Same seed, opposite drifts: identical first frames, landing columns too far apart for one paddle."""
    left, right = CatchEnv(), CatchEnv()
    frame_left, _ = left.reset(seed=5, options={"ball_velocity": (-3.0, 4.0)})
    frame_right, _ = right.reset(seed=5, options={"ball_velocity": (3.0, 4.0)})
    np.testing.assert_array_equal(frame_left, frame_right)
    assert not np.array_equal(left.state_vector(), right.state_vector())
    catch_zone = left.paddle_width + 2 * left.ball_radius
    assert abs(left.predicted_landing_x() - right.predicted_landing_x()) > catch_zone
    next_left, *_ = left.step(ACTION_STAY)
    next_right, *_ = right.step(ACTION_STAY)
    assert not np.array_equal(next_left, next_right), "the second frame reveals the motion"


@pytest.mark.parametrize("velocity", [(0.0, 5.0), (3.0, 3.5), (-8.0, 4.2), (7.5, 3.7)])
def test_predicted_landing_column_is_where_the_ball_lands(velocity):
    env = CatchEnv(obs_type="state", balls_per_episode=1)
    env.reset(seed=11, options={"ball_velocity": velocity})
    predicted = env.predicted_landing_x()
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(ACTION_STAY)
    assert env.ball_x == pytest.approx(predicted, abs=1e-9)


def test_drift_direction_is_a_coin_flip_whatever_the_spawn_column():
    """Across seeds, balls spawned on either half of the screen drift both ways about equally often."""
    env = CatchEnv(obs_type="state")
    spawns, drifts = [], []
    for seed in range(400):
        env.reset(seed=seed)
        spawns.append(env.ball_x)
        drifts.append(env.ball_vx)
    spawns, drifts = np.array(spawns), np.array(drifts)
    for half in (spawns < env.size / 2, spawns >= env.size / 2):
        assert 0.35 < np.mean(drifts[half] > 0) < 0.65


# ------------------------------------------------------------------------------------------ task difficulty


def test_oracle_catches_almost_everything_and_baselines_do_worse():
    oracle = reward_per_ball(lambda env, _: env.oracle_action())
    chaser = reward_per_ball(lambda env, _: env.chaser_action())
    random = reward_per_ball(lambda _, rng: int(rng.integers(3)))
    assert oracle > 0.8
    assert chaser < oracle - 0.3, "knowing where the ball is without its velocity must not be enough"
    assert random < 0.0 < chaser
