"""Built-in pixel environments, environment presets, and one entry point from a name to an env.

``register_builtin_envs()`` (run on ``import aime_rl.envs``, hence on ``import aime_rl``) registers:

- ``aime_rl/Catch-v0``: :class:`CatchEnv` with pixel observations, uint8 ``[64, 64, 3]``.
- ``aime_rl/CatchState-v0``: the same game with its true state as observation, float32 ``[5]``; ``render()``
  still returns the uint8 ``[64, 64, 3]`` frame.

From a name to an env (``aime_rl.envs.resolve``):

- :func:`resolve_env` (preset name, ``.toml`` path or Gymnasium id → :class:`EnvSpec`, cheap; ``ALE/...`` ids
  registered on demand), :func:`check_env_spec` (makes one env: uint8 image frames?), :func:`make_env` (the env
  with its Atari conventions) and :func:`make_env_fn` (a picklable factory for SB3 vec envs).

``load_env_preset(name_or_path)`` reads an environment preset (TOML) shipped in ``aime_rl/envs/presets/``: which
env id to make, with which ``gym.make`` kwargs, where its frames come from, and for Atari the ``[atari]`` options
(:class:`AtariOptions`, ``aime_rl.envs.atari``).
"""

from __future__ import annotations

import gymnasium as gym

from aime_rl.envs.atari import AtariOptions, is_atari_id, register_atari_envs
from aime_rl.envs.catch import CatchEnv
from aime_rl.envs.preset import FRAME_SOURCES, PRESETS_DIR, available_env_presets, load_env_preset
from aime_rl.envs.resolve import (
    EnvSpec,
    check_env_spec,
    make_env,
    make_env_fn,
    registered_env_id,
    resolve_env,
)

__all__ = [
    "BUILTIN_ENV_IDS",
    "FRAME_SOURCES",
    "PRESETS_DIR",
    "AtariOptions",
    "CatchEnv",
    "EnvSpec",
    "available_env_presets",
    "check_env_spec",
    "is_atari_id",
    "load_env_preset",
    "make_env",
    "make_env_fn",
    "register_atari_envs",
    "register_builtin_envs",
    "registered_env_id",
    "resolve_env",
]

CATCH_MAX_EPISODE_STEPS = 500  # 10 balls take at most 10 * 16 = 160 steps with the defaults
BUILTIN_ENV_IDS = ("aime_rl/Catch-v0", "aime_rl/CatchState-v0")


def register_builtin_envs() -> None:
    """Register the built-in envs with Gymnasium; calling it again is a no-op."""
    catch_kwargs = {
        "aime_rl/Catch-v0": {"obs_type": "pixels"},
        "aime_rl/CatchState-v0": {"obs_type": "state"},
    }
    for env_id, kwargs in catch_kwargs.items():
        if env_id not in gym.envs.registry:
            gym.register(
                id=env_id,
                entry_point="aime_rl.envs.catch:CatchEnv",
                max_episode_steps=CATCH_MAX_EPISODE_STEPS,
                kwargs=kwargs,
            )


register_builtin_envs()
