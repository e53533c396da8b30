"""Builders of the context-wrapper tests: short Catch episodes (one ball, 11–16 steps), the tiny preset
(context_dim 32) with a small window, and the reference step loops of SB3 and Gymnasium semantics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.wrappers import ContextObservation

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
