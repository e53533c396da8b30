"""Atari as a first-class env: ALE ids and presets resolve and make on demand, the Atari conventions (frame skip
with max-pooling, NOOP starts, sticky actions, FIRE on reset, life loss) do what they say, the checkers pass on the
context wrapper, and every failure is a one-line ``ValueError``.

ale-py (in the ``dev`` extra) runs ~10k emulator frames per second here; each test plays at most a few thousand
frames, with the tiny perception model of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from aime_rl.envs import AtariOptions, EnvSpec, check_env_spec, make_env, make_env_fn, resolve_env
from aime_rl.envs.atari import FireOnReset, MaxAndSkipFrames, NoopReset, TerminalOnLifeLoss

pytest.importorskip("ale_py", reason="the Atari tests need ale-py (the dev extra)")

ATARI_FRAME = (210, 160, 3)
NOOP = 0
# the frame-level conventions only: every emulator frame is reproducible from a raw frameskip=1 env
PLAIN = dict(noop_max=0, fire_on_reset=False, sticky_actions=False)


def wrapper_types(env: gym.Env) -> list[type]:
    types = []
    while isinstance(env, gym.Wrapper):
        types.append(type(env))
        env = env.env
    return types


# ------------------------------------------------------------------------------------------ resolve and make
@pytest.mark.parametrize("name", ["ALE/Pong-v5", "ALE/Breakout-v5", "pong", "breakout"])
def test_ale_ids_and_presets_resolve_and_make(name):
    spec = resolve_env(name)
    assert spec.env_id in ("ALE/Pong-v5", "ALE/Breakout-v5") and spec.atari is not None
    assert spec.frame_source == "observation"
    env = make_env(spec, seed=0)
    assert env.observation_space.shape == ATARI_FRAME and env.observation_space.dtype == np.uint8
    observation, _ = env.reset()
    assert observation.shape == ATARI_FRAME and observation.dtype == np.uint8
    observation, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(observation)
    assert {MaxAndSkipFrames, NoopReset, FireOnReset} <= set(wrapper_types(env))
    assert env.unwrapped._frameskip == 1  # frames are skipped (and max-pooled) by MaxAndSkipFrames
    env.close()


def test_ale_ids_need_no_manual_registration_in_a_fresh_process():
    code = (
        "import gymnasium as gym\n"
        "from aime_rl.envs import check_env_spec, make_env\n"
        "assert 'ALE/Pong-v5' not in gym.envs.registry\n"
        "assert check_env_spec('pong') == (210, 160, 3)\n"
        "make_env('ALE/Breakout-v5', seed=0).close()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_check_env_spec_returns_the_frame_shape():
    assert check_env_spec("pong") == ATARI_FRAME
    assert check_env_spec("ALE/Breakout-v5") == ATARI_FRAME
    assert check_env_spec("catch") == (64, 64, 3)


def test_presets_document_the_conventions():
    pong, breakout = resolve_env("pong"), resolve_env("breakout")
    for spec in (pong, breakout):
        assert spec.atari == AtariOptions(
            fire_on_reset=True
        )  # frame skip 4 + max-pool, 30 NOOPs, sticky 0.25
        assert "frameskip" not in spec.make_kwargs and spec.description
    raw = resolve_env("ALE/Pong-v5").atari
    assert raw.frame_skip == 4 and raw.max_pool and raw.noop_max == 30 and raw.fire_on_reset == "auto"
    assert not raw.terminal_on_life_loss
    v4 = resolve_env("PongNoFrameskip-v4").atari
    assert v4.effective_repeat_action_probability == 0.0  # the v4 ids have no sticky actions


def test_sticky_actions_on_and_off():
    on, off = make_env("pong"), make_env("pong", sticky_actions=False)
    assert on.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert off.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    other = make_env("pong", repeat_action_probability=0.1)
    assert other.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ conventions
def test_frame_skip_max_pools_the_last_two_raw_frames_and_sums_rewards():
    env = make_env("ALE/Pong-v5", **PLAIN)
    raw = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    observation, _ = env.reset(seed=3)
    raw_observation, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(observation, raw_observation)
    actions = np.random.default_rng(0).integers(env.action_space.n, size=60)
    pooled_differs = 0
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        frames, total = [], 0.0
        for _ in range(4):
            frame, raw_reward, *_ = raw.step(action)
            frames.append(frame)
            total += raw_reward
        np.testing.assert_array_equal(observation, np.maximum(frames[-2], frames[-1]))
        assert reward == total and not (terminated or truncated)
        pooled_differs += not np.array_equal(observation, frames[-1])
    assert pooled_differs > 0, "the max-pool never mattered: the check is vacuous"
    assert raw.unwrapped.ale.getEpisodeFrameNumber() == 4 * len(actions)


def test_frame_skip_without_max_pool_returns_the_last_frame():
    env = make_env("ALE/Pong-v5", max_pool=False, frame_skip=2, **PLAIN)
    raw = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=0)
    raw.reset(seed=0)
    for action in (2, 3, 2, 0):
        observation, *_ = env.step(action)
        raw.step(action)
        frame, *_ = raw.step(action)
        np.testing.assert_array_equal(observation, frame)


class CountdownFrames(gym.Env):
    """Frames whose value falls by 1 per step (so a max over two frames is the older one); ends at step 6."""

    observation_space = gym.spaces.Box(0, 255, (2, 2, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), 1.0, self.t == 6, False, {}

    def _frame(self):
        return np.full((2, 2, 1), 100 - self.t, np.uint8)


def test_max_pool_at_an_episode_end_uses_this_steps_frames_not_stale_ones():
    env = MaxAndSkipFrames(CountdownFrames(), skip=4)
    assert env.reset()[0].max() == 100
    observation, reward, terminated, *_ = env.step(0)  # frames 1..4: max(frame 3, frame 4) = 97
    assert observation.max() == 97 and reward == 4.0 and not terminated
    observation, reward, terminated, *_ = env.step(0)  # frames 5, 6 then the end: max(frame 5, frame 6) = 95
    assert observation.max() == 95 and reward == 2.0 and terminated
    observation, _ = env.reset()
    observation, *_ = env.step(
        0
    )  # after a reset the previous frame is the reset frame, not the last episode's
    assert observation.max() == 97


def test_noop_starts_are_bounded_seeded_and_counted_in_frames():
    env = make_env("ALE/Pong-v5", noop_max=5, fire_on_reset=False)
    counts = []
    for seed in range(6):
        _, info = env.reset(seed=seed)
        assert 1 <= info["noops"] <= 5
        assert (
            info["episode_frame_number"] == info["noops"]
        )  # NOOPs are emulator frames, below the frame skip
        assert env.reset(seed=seed)[1]["noops"] == info["noops"]
        counts.append(info["noops"])
    assert len(set(counts)) > 1
    _, info = make_env("ALE/Pong-v5", noop_max=0, fire_on_reset=False).reset(seed=0)
    assert "noops" not in info and info["episode_frame_number"] == 0


@pytest.mark.parametrize("env_id", ["ALE/Breakout-v5", "ALE/Pong-v5"])
def test_fire_on_reset_presses_fire_once(env_id):
    fire = make_env(env_id, noop_max=0, fire_on_reset=True)
    assert fire.fire_action == fire.unwrapped.get_action_meanings().index("FIRE") == 1
    _, info = fire.reset(seed=0)
    assert info["episode_frame_number"] == 4  # one FIRE step of 4 frames
    auto = make_env(env_id, noop_max=0)  # "auto": FIRE is the game's second action
    assert FireOnReset in wrapper_types(auto)
    no_fire = make_env(env_id, noop_max=0, fire_on_reset=False)
    assert FireOnReset not in wrapper_types(no_fire)
    assert no_fire.reset(seed=0)[1]["episode_frame_number"] == 0


def play_noops_until(env: gym.Env, stop, limit: int = 600):
    for step in range(limit):
        observation, reward, terminated, truncated, info = env.step(NOOP)
        if stop(terminated, truncated, info):
            return step, terminated, truncated, info
    raise AssertionError(f"condition not met in {limit} steps")


def test_terminal_on_life_loss_ends_the_episode_and_reset_continues_the_game():
    # FIRE launches Breakout's ball; with NOOPs the paddle stays and the ball is lost
    env = make_env("ALE/Breakout-v5", seed=0, terminal_on_life_loss=True, **PLAIN | {"fire_on_reset": True})
    assert TerminalOnLifeLoss in wrapper_types(env)
    step, terminated, truncated, info = play_noops_until(env, lambda term, trunc, info: term or trunc)
    assert terminated and info["life_lost"] and info["lives"] == 4
    assert not env.unwrapped.ale.game_over()
    frame_number = info["episode_frame_number"]
    _, info = env.reset()  # continues the game: same lives, frame counter not restarted
    assert info["lives"] == 4 and info["episode_frame_number"] > frame_number
    _, info = env.reset(seed=0)  # a seed restarts the game
    assert info["lives"] == 5 and info["episode_frame_number"] == 4

    evaluation = make_env("ALE/Breakout-v5", seed=0, training=False, terminal_on_life_loss=True, **PLAIN)
    assert TerminalOnLifeLoss not in wrapper_types(evaluation)
    evaluation = make_env(
        "ALE/Breakout-v5",
        seed=0,
        training=False,
        terminal_on_life_loss=True,
        **PLAIN | {"fire_on_reset": True},
    )
    eval_step, terminated, _, info = play_noops_until(evaluation, lambda term, trunc, info: info["lives"] < 5)
    assert eval_step == step and not terminated and "life_lost" not in info


def test_life_loss_is_off_by_default():
    env = make_env("breakout", seed=0, sticky_actions=False, noop_max=0)
    _, terminated, _, info = play_noops_until(env, lambda term, trunc, info: info["lives"] < 5)
    assert not terminated


# ---------------------------------------------------------------------------------- context wrapper, vec envs
def test_env_checkers_pass_on_the_context_wrapper_of_pong(model_dir):
    from aime_rl.wrappers import ContextObservation

    env = ContextObservation(make_env("pong"), model_dir, window=4)
    gymnasium_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (32,) and observation.dtype == np.float32


def test_context_env_entry_point_takes_ale_ids_and_presets(model_dir):
    for name in ("ALE/Pong-v5", "breakout"):
        env = gym.make("aime_rl/Context-v0", env_id=name, model_dir=model_dir, window=4, noop_max=2)
        observation, _ = env.reset(seed=0)
        assert observation.shape == (32,)
        env.close()


def test_make_context_vec_env_steps_on_ale_ids(model_dir):
    from aime_rl.wrappers import make_context_vec_env

    venv = make_context_vec_env("ALE/Pong-v5", model_dir, n_envs=2, window=4, seed=0, noop_max=3)
    observations = venv.reset()
    assert observations.shape == (2, 32) and observations.dtype == np.float32
    for _ in range(5):
        observations, rewards, dones, infos = venv.step(
            np.array([venv.action_space.sample() for _ in range(2)])
        )
    assert observations.shape == (2, 32) and np.isfinite(observations).all() and not dones.any()
    venv.close()


def test_make_env_fn_is_picklable_and_seeds_per_rank():
    factories = [make_env_fn("pong", rank, seed=10) for rank in range(2)]
    first, second = (pickle.loads(pickle.dumps(factory))() for factory in factories)
    again = make_env_fn("pong", 0, seed=10)()
    assert isinstance(first.unwrapped, type(second.unwrapped))
    np.testing.assert_array_equal(first.step(0)[0], again.step(0)[0])
    assert first.unwrapped.np_random.integers(10**9) != second.unwrapped.np_random.integers(10**9)
    with pytest.raises(ValueError, match="rank"):
        make_env_fn("pong", -1)


def test_env_spec_round_trips_through_json():
    spec = resolve_env("breakout").with_overrides(terminal_on_life_loss=True)
    again = EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.atari.terminal_on_life_loss


# ------------------------------------------------------------------------------------------------------ errors
def one_line_error(call, *args, match: str, **kwargs) -> str:
    with pytest.raises(ValueError, match=match) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_ale_py_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # `import ale_py` raises ImportError
    for key, spec in list(gym.envs.registry.items()):
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py"):
            monkeypatch.delitem(gym.envs.registry, key)
    extra = 'pip install "aime-rl[atari]"'
    for name in ("ALE/Pong-v5", "pong", "breakout"):
        assert extra in one_line_error(resolve_env, name, match="ale-py")
    assert extra in one_line_error(make_env, "ALE/Breakout-v5", match="ale-py")
    assert extra in one_line_error(resolve_env, "PongNoFrameskip-v4", match="unknown env")
    assert resolve_env("catch").atari is None  # the other presets keep working


def test_unknown_ids_get_close_matches():
    assert "'ALE/Pong-v5'" in one_line_error(resolve_env, "ALE/Pongg-v5", match="unknown env 'ALE/Pongg-v5'")
    assert "'CartPole-v1'" in one_line_error(resolve_env, "CartPol-v1", match="did you mean")
    assert "'breakout'" in one_line_error(make_env, "breakou", match="did you mean")
    one_line_error(resolve_env, "not an id", match="unknown env")


def test_envs_without_image_frames_point_to_the_rendering_preset():
    message = one_line_error(check_env_spec, "CartPole-v1", match="no image frames")
    assert "--env cartpole_pixels" in message
    message = one_line_error(check_env_spec, "Pendulum-v1", match="no image frames")
    assert 'frame_source = "render"' in message


def test_bad_atari_options_and_presets_are_refused(tmp_path):
    one_line_error(make_env, "catch", frame_skip=2, match="Atari options")
    one_line_error(make_env, "pong", frameskip=4, match="frame_skip")
    one_line_error(make_env, "pong", frame_skip=0, match="frame_skip")
    one_line_error(make_env, "pong", repeat_action_probability=1.0, match="repeat_action_probability")
    presets = {
        "unknown_option.toml": 'env_id = "ALE/Pong-v5"\n[atari]\nframe_skipp = 4\n',
        "clash.toml": 'env_id = "ALE/Pong-v5"\n[make_kwargs]\nframeskip = 4\n',
        "not_atari.toml": 'env_id = "aime_rl/Catch-v0"\n[atari]\nframe_skip = 4\n',
    }
    matches = {"unknown_option.toml": "frame_skipp", "clash.toml": "frameskip", "not_atari.toml": "Atari env"}
    for file_name, text in presets.items():
        path = tmp_path / file_name
        path.write_text(text)
        one_line_error(resolve_env, str(path), match=matches[file_name])


def test_atari_false_makes_the_raw_ale_env(tmp_path):
    path = tmp_path / "raw.toml"
    path.write_text('env_id = "ALE/Pong-v5"\natari = false\n[make_kwargs]\nframeskip = 2\n')
    spec = resolve_env(path)
    assert spec.atari is None
    env = make_env(spec)
    assert wrapper_types(env) == [gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker]
    assert env.unwrapped._frameskip == 2


def test_replay_recorder_records_an_atari_vec_env(tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from aime_rl.replay import ReplayStore
    from aime_rl.replay.recorder import VecRecordFrames

    venv = DummyVecEnv([make_env_fn("pong", rank, seed=0, noop_max=2) for rank in range(2)])
    recorder = VecRecordFrames(venv, tmp_path / "replay", frame_source="observation", frame_shape=(64, 64, 3))
    recorder.reset()
    for _ in range(6):
        recorder.step(np.array([venv.action_space.sample() for _ in range(2)]))
    recorder.close()
    store = ReplayStore.open(tmp_path / "replay")
    assert store.num_steps == 2 * 6  # two sub-envs, six steps, episodes cut at close()
