"""The run's env: ``config.env`` (a preset or a Gymnasium id) resolved, checked and made, Atari conventions included."""

from __future__ import annotations

import functools
from collections.abc import Callable

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from ..agents import check_action_space
from ..envs import EnvSpec, check_env_spec, make_env, make_env_fn, resolve_env
from .config import RunConfig


def env_spec(env: str) -> EnvSpec:
    """The resolved env of a preset name or an id (ALE ids registered on demand); ``ValueError`` if unknown."""
    return resolve_env(env)


def check_env(config: RunConfig, algo: str | None = None) -> None:
    """Make the run's env once and check it yields image frames (``CartPole-v1`` points to ``cartpole_pixels``);
    with ``algo``, also that the algorithm can act in its action space (SAC needs a Box, DQN a Discrete one)."""
    check_env_spec(env_spec(config.env))
    if algo is not None:
        env = make_single_env(config)
        try:
            check_action_space(algo, env.action_space)
        finally:
            env.close()


def make_venv(config: RunConfig, n_envs: int, seed: int, training: bool = True) -> VecEnv:
    """``n_envs`` copies of the run's env (sub-env i seeded ``seed + i``, SB3 ``Monitor`` for episode statistics);
    ``training=False`` for evaluation (whole games even where training ends episodes at a life loss).

    Its observations are always uint8 ``[H, W, 3]`` frames: an env whose frames come from ``render()``
    (``cartpole_pixels``) observes its rendered frame, so that the last frame of each episode reaches the replay and
    the context stream as ``infos[i]["terminal_observation"]`` (``get_images()`` after SB3's autoreset would show
    the next episode's first frame instead)."""
    spec = env_spec(config.env)
    factories = [make_env_fn(spec, i, seed, training=training, monitor=True) for i in range(n_envs)]
    if spec.frame_source == "render":
        factories = [functools.partial(observe_rendered_frames, factory) for factory in factories]
    return DummyVecEnv(factories)


def observe_rendered_frames(make: Callable[[], gym.Env]) -> gym.Env:
    """The env ``make()`` returns, observing ``env.render()`` (``render_mode="rgb_array"``) instead of its state.

    (The wrapper resets the env once, unseeded, to check its render; the vec env's own seeded reset comes after.)"""
    return gym.wrappers.AddRenderObservation(make(), render_only=True)


def make_single_env(config: RunConfig, training: bool = False) -> gym.Env:
    """One env of the run (for probes: whole games)."""
    return make_env(env_spec(config.env), training=training)
