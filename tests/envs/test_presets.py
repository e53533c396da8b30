"""Registration of the built-in envs, env presets (TOML) and ``resolve_env`` on non-Atari presets and ids."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import aime_rl.envs
from aime_rl.envs import (
    CatchEnv,
    available_env_presets,
    load_env_preset,
    make_env,
    register_builtin_envs,
    resolve_env,
)


def test_registration_after_importing_envs_and_idempotence():
    assert aime_rl.envs.BUILTIN_ENV_IDS == ("aime_rl/Catch-v0", "aime_rl/CatchState-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-registering would warn "Overriding environment"
        register_builtin_envs()
        register_builtin_envs()
    pixels = gym.make("aime_rl/Catch-v0")
    state = gym.make("aime_rl/CatchState-v0")
    assert isinstance(pixels.unwrapped, CatchEnv) and pixels.unwrapped.obs_type == "pixels"
    assert state.unwrapped.obs_type == "state"
    assert pixels.spec.max_episode_steps >= 200
    observation, _ = pixels.reset(seed=0)
    assert observation.shape == (64, 64, 3) and observation.dtype == np.uint8


def test_load_env_preset_catch_and_all_shipped_presets():
    assert set(available_env_presets()) >= {"catch", "cartpole_pixels", "pong", "breakout"}
    catch = load_env_preset("catch")
    assert catch["env_id"] == "aime_rl/Catch-v0"
    assert catch["frame_source"] == "observation" and catch["make_kwargs"] == {}
    for name in available_env_presets():
        preset = load_env_preset(name)
        assert isinstance(preset["env_id"], str) and preset["description"]
        assert preset["frame_source"] in ("observation", "render")
    cartpole = load_env_preset("cartpole_pixels")
    assert cartpole["env_id"] == "CartPole-v1" and cartpole["frame_source"] == "render"
    assert cartpole["make_kwargs"] == {"render_mode": "rgb_array"}
    assert load_env_preset("pong")["env_id"] == "ALE/Pong-v5"
    assert load_env_preset("breakout")["env_id"] == "ALE/Breakout-v5"
    for name in ("pong", "breakout"):  # Atari conventions live in [atari], ALE itself runs with frameskip=1
        atari = load_env_preset(name)
        assert "frameskip" not in atari["make_kwargs"] and atari["atari"]["frame_skip"] == 4
    assert catch["atari"] is None and cartpole["atari"] is None


def test_resolve_env_on_non_atari_presets_and_ids_is_unchanged():
    catch = resolve_env("catch")
    assert (catch.env_id, catch.make_kwargs, catch.frame_source, catch.atari) == (
        "aime_rl/Catch-v0",
        {},
        "observation",
        None,
    )
    cartpole = resolve_env("cartpole_pixels")
    assert cartpole.frame_source == "render" and cartpole.make_kwargs == {"render_mode": "rgb_array"}
    assert resolve_env("aime_rl/Catch-v0").preset is None
    env = make_env("catch", seed=0, balls_per_episode=1)
    assert isinstance(env.unwrapped, CatchEnv) and env.unwrapped.balls_per_episode == 1
    with pytest.raises(ValueError, match="did you mean 'catch'"):
        resolve_env("cacth")


def test_cartpole_pixels_preset_makes_an_env_that_renders_frames():
    pytest.importorskip(
        "pygame", reason="CartPole's rgb_array rendering needs pygame (gymnasium[classic-control])"
    )
    preset = load_env_preset("cartpole_pixels")
    env = gym.make(preset["env_id"], **preset["make_kwargs"])
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[-1] == 3 and frame.dtype == np.uint8


def test_a_preset_file_loads_from_its_path(tmp_path):
    custom = tmp_path / "custom.toml"
    custom.write_text('env_id = "aime_rl/Catch-v0"\nframe_source = "render"\n')
    assert load_env_preset(custom)["frame_source"] == "render"


@pytest.mark.parametrize(
    ("preset", "text", "match"),
    [
        ("no_such_env", None, "no_such_env"),
        ("missing.toml", None, "missing.toml"),
        ("custom.toml", 'env_id = "aime_rl/Catch-v0"\nframe_source = "camera"\n', "frame_source"),
        ("custom.toml", "env_id = [", "not valid TOML"),
    ],
    ids=["unknown-name", "missing-file", "bad-frame_source", "invalid-toml"],
)
def test_unknown_or_malformed_preset_raises_value_error(tmp_path, preset, text, match):
    if text is not None:
        (tmp_path / preset).write_text(text)
    name_or_path = preset if preset == "no_such_env" else tmp_path / preset
    with pytest.raises(ValueError, match=match):
        load_env_preset(name_or_path)
