"""Builders of the probe tests: short Catch episodes, Pong with episodes cut short, synthetic labelled frames."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import LabelledFrames, ProbeConfig, VariableInfo

WINDOW = 4


FAST = ProbeConfig(lr=0.05, batch_size=64, max_epochs=30, patience=5)


def short_catch() -> gym.Env:
    return gym.make("aime_rl/Catch-v0", balls_per_episode=1)  # episodes of 11–16 steps


def pong() -> gym.Env:
    import ale_py

    gym.register_envs(ale_py)
    return gym.make("ALE/Pong-v5", frameskip=4, repeat_action_probability=0.25)


def synthetic(labels: dict[str, np.ndarray], episodes: int, variables: dict[str, VariableInfo] | None = None):
    """LabelledFrames with distinct random 4×4 frames, ``episodes`` equal-length episodes."""
    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    episode_ids = np.repeat(np.arange(episodes), n // episodes)
    steps = np.concatenate([np.arange(n // episodes)] * episodes)
    if variables is None:
        variables = {
            k: VariableInfo("discrete" if np.issubdtype(v.dtype, np.integer) else "continuous", ("misc",))
            for k, v in labels.items()
        }
    return LabelledFrames(
        frames=frames,
        labels=labels,
        variables=variables,
        episode_ids=episode_ids,
        steps=steps,
        actions=np.zeros(n, dtype=np.int64),
        hashes=np.array([hash(f.tobytes()) for f in frames], dtype=np.int64),
    )
