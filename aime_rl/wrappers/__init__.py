"""Env wrappers that replace pixel observations by the causal context of a frozen ``CausalPerceiverIO``.

- :class:`ContextObservation`: Gymnasium wrapper for one env; ``gym.make("aime_rl/Context-v0", env_id=...,
  model_dir=...)`` once :func:`register_context_env` ran (``import aime_rl`` runs it).
- :class:`VecContextObservation`: SB3 ``VecEnvWrapper``, one batched forward for all sub-envs, terminal
  observations transformed; :func:`make_context_vec_env` builds one from an env id.
- :class:`VectorContextObservation`: Gymnasium vector wrapper (``NEXT_STEP`` autoreset), and
  :class:`GymnasiumToSB3VecEnv` to train SB3 on a Gymnasium vector env.
- ``preprocessing``: frames from observations or ``render()``, resized to the model's size (torch, no opencv).

The observation is float32 ``[context_dim]`` per env, LayerNorm-ed and unbounded (``Box(-inf, inf)``). With
``world_model=`` (a trained ``VRNN`` or its directory) every wrapper appends the VRNN filter's belief
``[h_{t-1}, z_t]``: float32 ``[context_dim + belief_dim]`` per env.

The classes are imported on first use (``import aime_rl`` only registers the env id and stays free of torch and
SB3 imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from .context import (
        ContextObservation,
        SharedModel,
        belief_actions,
        context_space,
        make_context_env,
        resolve_world_model,
    )
    from .preprocessing import frame_source_for, is_image_space, load_perception_model, to_model_frames
    from .vec_context import VecContextObservation, env_factory, fork_stream, make_context_vec_env
    from .vector_context import GymnasiumToSB3VecEnv, VectorContextObservation, split_vector_infos

CONTEXT_ENV_ID = "aime_rl/Context-v0"

_LAZY_EXPORTS = {
    "ContextObservation": "context",
    "SharedModel": "context",
    "belief_actions": "context",
    "context_space": "context",
    "resolve_world_model": "context",
    "make_context_env": "context",
    "frame_source_for": "preprocessing",
    "is_image_space": "preprocessing",
    "load_perception_model": "preprocessing",
    "to_model_frames": "preprocessing",
    "VecContextObservation": "vec_context",
    "env_factory": "vec_context",
    "fork_stream": "vec_context",
    "make_context_vec_env": "vec_context",
    "GymnasiumToSB3VecEnv": "vector_context",
    "VectorContextObservation": "vector_context",
    "split_vector_infos": "vector_context",
}

__all__ = [
    "CONTEXT_ENV_ID",
    "ContextObservation",
    "GymnasiumToSB3VecEnv",
    "SharedModel",
    "VecContextObservation",
    "VectorContextObservation",
    "belief_actions",
    "context_space",
    "env_factory",
    "fork_stream",
    "frame_source_for",
    "is_image_space",
    "load_perception_model",
    "make_context_env",
    "make_context_vec_env",
    "register_context_env",
    "resolve_world_model",
    "split_vector_infos",
    "to_model_frames",
]


def register_context_env() -> None:
    """Register ``aime_rl/Context-v0`` (entry point :func:`make_context_env`); calling it again is a no-op.

    ``gym.make("aime_rl/Context-v0", env_id="aime_rl/Catch-v0", model_dir="ckpt", window=16, **make_kwargs)``
    is ``ContextObservation(gym.make(env_id, **make_kwargs), model_dir, window=16)``.
    """
    if CONTEXT_ENV_ID not in gym.envs.registry:
        gym.register(id=CONTEXT_ENV_ID, entry_point="aime_rl.wrappers.context:make_context_env")


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
