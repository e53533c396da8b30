"""The run's env: resolve ``config.env`` (a preset or a Gymnasium id), check it yields frames, make vec envs."""

from __future__ import annotations

from stable_baselines3.common.env_util import make_vec_env

from ..envs import load_env_preset
from .config import RunConfig


class _Spec:
    def __init__(self, preset):
        self.env_id = preset["env_id"]
        self.make_kwargs = dict(preset.get("make_kwargs", {}))
        self.frame_source = preset.get("frame_source", "observation")


def env_spec(env: str) -> _Spec:
    try:
        return _Spec(load_env_preset(env))
    except ValueError:
        return _Spec({"env_id": env})


def check_env(config: RunConfig) -> None:
    env_spec(config.env)


def make_venv(config: RunConfig, n_envs: int, seed: int):
    spec = env_spec(config.env)
    return make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=spec.make_kwargs)
