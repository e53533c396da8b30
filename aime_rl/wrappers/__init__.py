"""Env wrappers that replace pixel observations by the causal context of a frozen ``CausalPerceiverIO``.

- :class:`ContextObservation`: Gymnasium wrapper for one env; ``gym.make("aime_rl/Context-v0", env_id=...,
  model_dir=...)`` once :func:`register_context_env` ran (``import aime_rl`` runs it); :func:`make_context_env`
  is its entry point.
- :class:`VecContextObservation`: SB3 ``VecEnvWrapper``, one batched forward for all sub-envs, terminal
  observations transformed; :func:`make_context_vec_env` builds one from an env id, :func:`env_factory` makes
  picklable env factories for ``DummyVecEnv`` / ``SubprocVecEnv``.
- :class:`VectorContextObservation`: Gymnasium vector wrapper (``NEXT_STEP`` autoreset), and
  :class:`GymnasiumToSB3VecEnv` to train SB3 on a Gymnasium vector env.

The observation is float32 ``[context_dim]`` per env, LayerNorm-ed and unbounded (``Box(-inf, inf)``). With
``world_model=`` (a trained ``VRNN`` or its directory) every wrapper appends the VRNN filter's belief
``[h_{t-1}, z_t]``: float32 ``[context_dim + belief_dim]`` per env.

Modules: ``core`` (:class:`~aime_rl.wrappers.core.ContextCore`, the stream, belief filter, frames and resets the
three wrappers share), ``models`` (resolving the perception and world models), ``preprocessing`` (frames from
observations or ``render()``, resized to the model's size with torch), ``context``, ``vec_context`` and
``vector_context`` (the wrappers). Their helpers are imported from those modules; ``__all__`` here is the public
API.

The classes are imported on first use (``import aime_rl`` only registers the env id and stays free of torch and
SB3 imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from .context import ContextObservation, make_context_env
    from .vec_context import VecContextObservation, env_factory, make_context_vec_env
    from .vector_context import GymnasiumToSB3VecEnv, VectorContextObservation

CONTEXT_ENV_ID = "aime_rl/Context-v0"

_LAZY_EXPORTS = {
    "ContextObservation": "context",
    "make_context_env": "context",
    "VecContextObservation": "vec_context",
    "env_factory": "vec_context",
    "make_context_vec_env": "vec_context",
    "GymnasiumToSB3VecEnv": "vector_context",
    "VectorContextObservation": "vector_context",
}

__all__ = [
    "CONTEXT_ENV_ID",
    "ContextObservation",
    "GymnasiumToSB3VecEnv",
    "VecContextObservation",
    "VectorContextObservation",
    "env_factory",
    "make_context_env",
    "make_context_vec_env",
    "register_context_env",
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
