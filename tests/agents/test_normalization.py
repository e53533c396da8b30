"""Per-feature standardisation of context observations (``aime_rl.agents.normalization``)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from aime_rl.agents import load_normalization, normalize_observations, save_normalization

DIM = 6


class NearlyConstantVectors(gym.Env):
    """Observations like a context's: a large constant offset plus a variation of 1 % of it, ``[DIM]``.
    With ``with_frame`` the observation is a dict that also holds a uint8 frame."""

    def __init__(self, with_frame: bool = False):
        self.with_frame = with_frame
        vector = spaces.Box(-np.inf, np.inf, (DIM,), np.float32)
        frame = spaces.Box(0, 255, (4, 4, 3), np.uint8)
        self.observation_space = spaces.Dict({"context": vector, "frame": frame}) if with_frame else vector
        self.action_space = spaces.Discrete(2)
        self.offset = np.linspace(-0.6, 0.6, DIM).astype(np.float32)

    def _obs(self):
        vector = self.offset + 0.01 * self.np_random.standard_normal(DIM).astype(np.float32)
        if not self.with_frame:
            return vector
        return {"context": vector, "frame": np.full((4, 4, 3), 7, np.uint8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 1.0, False, False, {}


def make_venv(with_frame: bool = False, seed: int = 0) -> DummyVecEnv:
    venv = DummyVecEnv([lambda: NearlyConstantVectors(with_frame) for _ in range(2)])
    venv.seed(seed)
    return venv


def run(venv, steps: int) -> np.ndarray:
    """Observations of ``steps`` steps ``[steps, num_envs, DIM]`` (the vector entry of dict observations)."""
    observations = []
    venv.reset()
    for _ in range(steps):
        obs, _, _, _ = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
        observations.append(obs["context"] if isinstance(obs, dict) else obs)
    return np.stack(observations)


def test_nearly_constant_features_come_out_with_zero_mean_and_unit_variance():
    observations = run(normalize_observations(make_venv()), 400)[100:].reshape(-1, DIM)
    assert np.abs(observations.mean(0)).max() < 0.2
    assert np.allclose(observations.std(0), 1.0, atol=0.2)


def test_rewards_are_left_alone():
    venv = normalize_observations(make_venv())
    venv.reset()
    _, rewards, _, _ = venv.step(np.zeros(2, dtype=np.int64))
    assert np.array_equal(rewards, [1.0, 1.0])


def test_saved_statistics_reload_exactly_and_frozen(tmp_path):
    trained = normalize_observations(make_venv(), clip=3.0)
    run(trained, 200)
    path = tmp_path / "agent" / "observation_normalization.json"
    save_normalization(trained, path)
    loaded = load_normalization(make_venv(seed=5), path)
    assert not loaded.training and loaded.clip_obs == 3.0
    assert np.array_equal(loaded.obs_rms.mean, trained.obs_rms.mean)
    assert np.array_equal(loaded.obs_rms.var, trained.obs_rms.var)
    assert loaded.obs_rms.count == trained.obs_rms.count
    count = loaded.obs_rms.count
    run(loaded, 20)
    assert loaded.obs_rms.count == count  # frozen: evaluation does not move the statistics


def test_reloaded_statistics_normalise_like_the_training_wrapper(tmp_path):
    trained = normalize_observations(make_venv())
    run(trained, 200)
    save_normalization(trained, tmp_path / "stats.json")
    loaded = load_normalization(make_venv(seed=5), tmp_path / "stats.json")
    env = NearlyConstantVectors()
    env.reset(seed=9)
    raw = np.stack([env._obs() for _ in range(16)])  # from the training distribution, not at the clip
    trained.training = False
    expected = trained.normalize_obs(raw)
    assert np.abs(expected).max() < 5
    assert np.allclose(loaded.normalize_obs(raw), expected)


def test_terminal_observations_are_standardised_too():
    venv = normalize_observations(
        DummyVecEnv([lambda: gym.wrappers.TimeLimit(NearlyConstantVectors(), 3) for _ in range(2)])
    )
    venv.reset()
    for _ in range(3):
        obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert dones.all()
    terminal = np.stack([info["terminal_observation"] for info in infos])
    raw_offset = NearlyConstantVectors().offset
    assert not np.allclose(terminal, raw_offset, atol=0.1)  # raw ones would be the offset ± 0.03
    assert np.abs(terminal).max() <= 10


def test_dict_observations_standardise_only_the_vector_entry(tmp_path):
    venv = normalize_observations(make_venv(with_frame=True))
    venv.reset()
    obs, _, _, _ = venv.step(np.zeros(2, dtype=np.int64))
    assert obs["frame"].dtype == np.uint8 and (obs["frame"] == 7).all()
    run(venv, 50)
    save_normalization(venv, tmp_path / "stats.json")
    loaded = load_normalization(make_venv(with_frame=True), tmp_path / "stats.json")
    for field in ("mean", "var"):
        assert np.array_equal(
            getattr(loaded.obs_rms["context"], field), getattr(venv.obs_rms["context"], field)
        )
    assert loaded.obs_rms["context"].count == venv.obs_rms["context"].count
    obs = loaded.reset()
    assert obs["frame"].dtype == np.uint8 and (obs["frame"] == 7).all()


def test_image_observations_are_refused():
    venv = DummyVecEnv([lambda: gym.make("aime_rl/Catch-v0")])
    with pytest.raises(ValueError, match="vector observations"):
        normalize_observations(venv)


def test_a_corrupted_statistics_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "observation_normalization.json"
    path.write_text('{"version": 1, "stats": {')
    with pytest.raises(ValueError, match="observation_normalization.json"):
        load_normalization(make_venv(), path)


def test_statistics_of_another_shape_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / "stats.json"
    entry = {"mean": [0.0] * (DIM + 1), "var": [1.0] * (DIM + 1), "count": 10.0}
    path.write_text(json.dumps({"version": 1, "clip": 10.0, "stats": {"": entry}}))
    with pytest.raises(ValueError, match="stats.json.*do not fit"):
        load_normalization(make_venv(), path)


def write_stats(path, var=1.0, count=10.0, clip=10.0) -> None:
    entry = {"mean": [0.0] * DIM, "var": [var] * DIM, "count": count}
    path.write_text(json.dumps({"version": 1, "clip": clip, "stats": {"": entry}}))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(var=-1.0), "var >= 0"),
        (dict(count=float("inf")), "count must be finite"),
        (dict(clip=None), "clip must be a number"),
        (dict(clip=0.0), "clip must be finite and > 0"),
        (dict(clip=float("nan")), "clip must be finite and > 0"),
    ],
)
def test_invalid_statistics_are_an_error_naming_the_file(tmp_path, bad, match):
    path = tmp_path / "stats.json"
    write_stats(path, **bad)
    with pytest.raises(ValueError, match=f"stats.json.*{match}"):
        load_normalization(make_venv(), path)
