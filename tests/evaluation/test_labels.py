"""Labelled frames: Catch's and CartPole's true state, Pong's RAM bytes, collection options, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.envs.catch import BALL_RGB, PADDLE_RGB
from aime_rl.evaluation import (
    LabelledFrames,
    VariableInfo,
    atari_ram_labels,
    cartpole_labels,
    catch_labels,
    catch_landing_labels,
    collect_labelled,
    expand_ram_variables,
)
from tests.evaluation.helpers import pong, short_catch


def test_catch_labels_match_the_true_state(catch_data):
    data = catch_data
    assert set(data.labels) == {"ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"}
    assert all(info.kind == "continuous" for info in data.variables.values())
    assert data.num_episodes >= 4 and np.all(data.steps[data.episode_starts()] == 0)
    extent = 63.0  # positions are pixels / (size - 1)
    for i in range(len(data)):
        frame = data.frames[i]
        rows, cols = np.nonzero(np.all(frame == BALL_RGB, axis=-1))
        assert abs(rows.mean() - data.labels["ball_y"][i] * extent) <= 0.5 + 1e-3
        assert abs(cols.mean() - data.labels["ball_x"][i] * extent) <= 0.5 + 1e-3
        _, paddle_cols = np.nonzero(np.all(frame == PADDLE_RGB, axis=-1))
        assert abs(paddle_cols.mean() + 0.5 - data.labels["paddle_x"][i] * extent) <= 0.5 + 1e-3
    # the velocity labels are the ball's motion to the next frame (no bounce, same ball)
    nxt = np.flatnonzero(~data.episode_starts()[1:])  # rows i with i + 1 in the same episode
    dy = (data.labels["ball_y"][nxt + 1] - data.labels["ball_y"][nxt]) * extent
    falling = (dy > 0) & (
        data.labels["ball_y"][nxt + 1] * extent < 57 - 1e-3
    )  # not spawning nor landing (y 57)
    assert falling.sum() > 30
    assert np.allclose(dy[falling], data.labels["ball_vy"][nxt][falling] * 5.0, atol=1e-4)


def test_catch_landing_column_is_where_each_ball_lands():
    data = collect_labelled(short_catch, catch_landing_labels, 80, seed=5)  # one ball per episode
    assert set(data.labels) == {"ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x", "landing_x"}
    assert data.variables["landing_x"].kind == "continuous"
    bounced = 0
    for episode in np.unique(data.episode_ids)[:-1]:  # the last one is cut by the frame budget
        rows = np.flatnonzero(data.episode_ids == episode)
        landed_at = data.labels["ball_x"][rows[-1]]  # the last frame: the ball on the paddle row
        assert np.allclose(data.labels["landing_x"][rows], landed_at, atol=1e-6)
        bounced += np.any(np.diff(np.sign(data.labels["ball_vx"][rows])) != 0)
    assert bounced >= 1  # the unfolding of wall bounces was exercised


def test_cartpole_labels_are_the_state_each_rendered_frame_shows():
    data = collect_labelled(
        lambda: gym.make("CartPole-v1", render_mode="rgb_array"), cartpole_labels, 60, seed=1
    )
    assert set(data.labels) == {"cart_x", "cart_velocity", "pole_angle", "pole_angular_velocity"}
    assert all(info.kind == "continuous" for info in data.variables.values())
    assert data.variables["cart_x"].categories == ("agent_localization",)
    assert data.num_episodes >= 2
    pixels_per_metre, centre = 600 / 4.8, 300  # the 600-pixel-wide render spans x in [-2.4, 2.4]
    for i in range(len(data)):
        black = np.all(data.frames[i] == 0, axis=-1)  # the cart, and the track line across the whole width
        cart_rows = (black.sum(axis=1) > 0) & (black.sum(axis=1) < black.shape[1])
        cart_column = np.nonzero(black[cart_rows])[1].mean()
        assert abs(cart_column - (data.labels["cart_x"][i] * pixels_per_metre + centre)) <= 1.25
    # consecutive labels follow CartPole's Euler step (x += 0.02 * x_dot): label i is the state after step i
    nxt = np.flatnonzero(~data.episode_starts()[1:])
    x, v = data.labels["cart_x"], data.labels["cart_velocity"]
    assert np.allclose(x[nxt + 1], x[nxt] + 0.02 * v[nxt], atol=1e-5)


def test_cartpole_labels_refuse_another_env_and_one_not_reset():
    with pytest.raises(ValueError, match="CartPoleEnv"):
        cartpole_labels(short_catch())
    with pytest.raises(ValueError, match="reset"):
        cartpole_labels(gym.make("CartPole-v1"))


def test_pong_ram_labels_read_the_right_bytes(pong_data):
    data = pong_data
    assert data.game == "pong" and data.num_episodes == 5
    assert data.variables["ball_x"] == VariableInfo("discrete", ("small_object_localization",), 256)
    assert len(np.unique(data.labels["ball_x"])) > 10 and len(np.unique(data.labels["player_y"])) > 10
    # the ball is the (236, 236, 236) blob inside the playfield: RAM 49/54 follow its column/row exactly
    cols, rows, ram_x, ram_y = [], [], [], []
    for i in range(len(data)):
        r, c = np.nonzero(np.all(data.frames[i, 34:194] == (236, 236, 236), axis=-1))
        if len(r):
            rows.append(r.mean()), cols.append(c.mean())
            ram_x.append(data.labels["ball_x"][i]), ram_y.append(data.labels["ball_y"][i])
    assert len(cols) > 100
    assert np.corrcoef(cols, ram_x)[0, 1] > 0.99 and np.corrcoef(rows, ram_y)[0, 1] > 0.99
    # and they are the bytes themselves, read after every step
    env = pong()
    labels = atari_ram_labels("ALE/Pong-v5")
    env.reset(seed=0)
    for _ in range(5):
        env.step(2)
    ram = env.unwrapped.ale.getRAM()
    assert labels(env, None, {}) == {name: int(ram[i]) for name, i in expand_ram_variables("pong").items()}
    env.close()


def test_collection_options(catch_data):
    stay = collect_labelled(short_catch, catch_labels, 40, policy=lambda obs: 1, seed=3)
    assert np.all(stay.actions[~np.r_[stay.episode_starts()[1:], True]] == 1)
    assert len(np.unique(stay.labels["paddle_x"])) == 1  # the paddle never moves

    class Agent:  # SB3's predict(obs, deterministic) -> (action, state)
        def predict(self, obs, deterministic=False):
            return np.array(2), None

    right = collect_labelled(short_catch, catch_labels, 20, policy=Agent(), seed=3)
    assert np.all(np.diff(right.labels["paddle_x"][right.episode_ids == 0]) >= 0)

    small = collect_labelled(short_catch, catch_labels, 70, seed=3, store_size=(32, 32))
    assert small.frames.shape == (70, 32, 32, 3) and np.array_equal(small.hashes, catch_data.hashes)

    long_only = collect_labelled(short_catch, catch_labels, 70, seed=3, min_episode_length=14)
    lengths = np.bincount(long_only.episode_ids)
    assert lengths.min() >= 14 and len(lengths) == long_only.num_episodes < catch_data.num_episodes

    def custom(env, obs, info):
        return {"ball_column": int(env.unwrapped.ball_x), "height": float(env.unwrapped.ball_y)}

    data = collect_labelled(short_catch, custom, 10, seed=3)
    assert data.variables["ball_column"] == VariableInfo(
        "discrete", ("small_object_localization",)
    )  # by name
    assert data.variables["height"].kind == "continuous" and data.labels["ball_column"].dtype == np.int64


def test_labelled_frames_save_load(catch_data, tmp_path):
    path = tmp_path / "catch.npz"
    catch_data.save(path)
    loaded = LabelledFrames.load(path)
    assert np.array_equal(loaded.frames, catch_data.frames)
    assert all(np.array_equal(loaded.labels[k], v) for k, v in catch_data.labels.items())
    assert loaded.variables == catch_data.variables and loaded.action_space == catch_data.action_space
    assert loaded.env_id == "aime_rl/Catch-v0"
    part = catch_data.select_episodes([1, 2])
    assert part.num_episodes == 2 and part.episode_ids[0] == 0
    assert np.array_equal(part.frames, catch_data.frames[np.isin(catch_data.episode_ids, [1, 2])])
