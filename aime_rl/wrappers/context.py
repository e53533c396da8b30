"""``ContextObservation``: a Gymnasium wrapper whose observation is the causal context of the frames so far.

Every step the env's frame (its image observation, or ``render()`` for state-based envs made with
``render_mode="rgb_array"``) is resized to the model's frame size and fed to a ``CausalPerceiverIO`` context stream;
the observation is the context vector of that frame, float32 ``[context_dim]``. ``reset()`` restarts the stream, so
nothing leaks across episodes. The model runs frozen, in eval mode, under ``torch.inference_mode()``.

The context comes out of a LayerNorm: it is roughly zero-mean and unit-scale per vector but not bounded, so the
observation space is ``Box(-inf, inf, (context_dim,), float32)``.

Belief features: with ``world_model=`` a trained ``VRNN`` (or its checkpoint directory) the observation is
``[c_t, belief_t]``, float32 ``[context_dim + belief_dim]``, where ``belief_t = [h_{t-1}, z_t]`` comes from a
``VRNNFilter`` run online: one filter step per env step, fed the context stream's tokens of the frame (one
tokenizer pass per step) and the action passed to the previous ``step`` (the wrapper records it); ``reset()``
restarts the filter with the stream. The cost per step does not depend on t.

One-liners::

    env = ContextObservation(gym.make("aime_rl/Catch-v0"), "checkpoints/perceiver", window=16)
    env = gym.make("aime_rl/Context-v0", env_id="aime_rl/Catch-v0", model_dir="checkpoints/perceiver")

(``aime_rl/Context-v0`` is registered by ``aime_rl.wrappers.register_context_env()``, which ``import aime_rl``
runs; any ``gym.make`` kwargs of the inner env can be added, e.g. ``render_mode="rgb_array"`` for
``env_id="CartPole-v1"``.)

Constructor arguments are recorded for ``env.spec`` without deep-copying a model: a checkpoint directory is recorded
as a string, so ``gym.make(env.spec)`` rebuilds the wrapped env (and ``env.spec.to_json()`` works); a model instance
(perception model or world model) is recorded behind a :class:`SharedModel` reference that copies share (the spec
then rebuilds with the same model object, and is not JSON-serialisable).
"""

from __future__ import annotations

import os
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from aime_rl.envs import EnvSpec, make_env
from aime_rl.perception import CausalPerceiverIO

from .core import ContextAttributes, ContextCore, context_space
from .models import ModelOrDir, SharedModel, WorldModelOrDir
from .preprocessing import frame_source_for

__all__ = ["ContextObservation", "make_context_env"]


def _recordable(model_or_dir: ModelOrDir) -> SharedModel | str:
    """What ``env.spec`` records: a directory as ``str``, a model as a :class:`SharedModel` (never copied)."""
    if isinstance(model_or_dir, SharedModel):
        return model_or_dir
    if isinstance(model_or_dir, CausalPerceiverIO):
        return SharedModel(model_or_dir)
    if isinstance(model_or_dir, (str, os.PathLike)):
        return os.fspath(model_or_dir)
    raise ValueError(
        f"model_or_dir must be a CausalPerceiverIO or a checkpoint directory, got {type(model_or_dir).__name__}"
    )


def _recordable_world_model(world_model: WorldModelOrDir) -> SharedModel | str | None:
    """What ``env.spec`` records for ``world_model``: None, a directory as ``str`` or a :class:`SharedModel`."""
    if world_model is None or isinstance(world_model, SharedModel):
        return world_model
    if isinstance(world_model, (str, os.PathLike)):
        return os.fspath(world_model)
    if isinstance(world_model, nn.Module):
        return SharedModel(world_model)
    raise ValueError(
        f"world_model must be a VRNN, a checkpoint directory or None, got {type(world_model).__name__}"
    )


class ContextObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs, ContextAttributes):
    """Observation = causal context of the frames of this episode so far, float32 ``[context_dim]``
    (``[context_dim + belief_dim]`` with a world model).

    Args:
        env: a pixel env (uint8 image observations) or an env made with ``render_mode="rgb_array"``.
        model_or_dir: a ``CausalPerceiverIO`` or a directory written by its ``save_pretrained``.
        window: frames the context attends to (``t - window + 1 … t``), as in ``CausalPerceiverIO.stream``.
        device: where the model runs; observations are always numpy on the CPU.
        keep_frame: observe ``{"context": [context_dim] float32, "frame": [h, w, 3] uint8}`` where ``frame`` is the
            model-resolution frame the context saw (plus ``"belief": [belief_dim] float32`` with a world model).
        timescale: the stream's timescale (``"fast"`` = per-frame context).
        world_model: a trained ``VRNN`` on this perception model, or its checkpoint directory: the observation
            becomes ``[c_t, belief_t]`` float32 ``[context_dim + belief_dim]`` with the belief
            ``[h_{t-1}, z_t]`` of its posterior filter run online (reset per episode, fed the previous action).

    Raises ``ValueError`` for an env without frames, a missing checkpoint, a bad ``window``, or a ``world_model``
    that does not match the perception model or the env's action space.

    Example (an untrained tiny model; in practice pass a trained model or its checkpoint directory):

    >>> import gymnasium as gym
    >>> from aime_rl.perception import CausalPerceiverIO
    >>> from aime_rl.wrappers import ContextObservation
    >>> model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64))
    >>> env = ContextObservation(gym.make("aime_rl/Catch-v0"), model, window=8)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> obs.shape, obs.dtype, env.observation_space.contains(obs)  # obs = c_t, [context_dim] float32
    ((32,), dtype('float32'), True)
    """

    def __init__(
        self,
        env: gym.Env,
        model_or_dir: ModelOrDir,
        window: int | None = 16,
        device: str | torch.device = "cpu",
        keep_frame: bool = False,
        timescale: str = "fast",
        world_model: WorldModelOrDir = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model_or_dir=_recordable(model_or_dir),
            window=window,
            device=str(device),
            keep_frame=keep_frame,
            timescale=timescale,
            world_model=_recordable_world_model(world_model),
            _disable_deepcopy=True,
        )
        gym.ObservationWrapper.__init__(self, env)
        self._core = ContextCore(
            model_or_dir,
            1,
            env.action_space,
            frame_source_for(env),
            window=window,
            device=device,
            timescale=timescale,
            world_model=world_model,
        )
        self._core.start()
        self.keep_frame = keep_frame
        self._prev_action: Any = None
        self.observation_space = self._make_observation_space()

    def _make_observation_space(self) -> spaces.Space:
        if not self.keep_frame:
            return context_space(self._core.observation_dim)
        height, width = self.model.frame_size
        parts = {"context": context_space(self.model.context_dim)}
        if self.belief_dim:
            parts["belief"] = context_space(self.belief_dim)
        parts["frame"] = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
        return spaces.Dict(parts)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restart the context stream (and the belief filter), then reset the env and observe its first frame."""
        self._core.reset()
        self._prev_action = None
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; ``action`` is recorded as the belief filter's previous action for the new frame."""
        self._prev_action = action
        return super().step(action)

    def observation(self, observation: Any) -> np.ndarray | dict[str, np.ndarray]:
        """The env's current frame → a fresh float32 context ``[context_dim]`` (plus the frame if kept).

        With a world model: ``[context_dim + belief_dim]`` (``[c_t, h_{t-1}, z_t]``), or a ``"belief"`` entry
        ``[belief_dim]`` beside ``"context"`` with ``keep_frame``.
        """
        frames = self._core.frames(observation, self.env.render)  # uint8 [1, 3, h, w]
        actions = None if self._prev_action is None else self._core.filter_actions([self._prev_action])
        contexts, beliefs = self._core.step(frames, actions)  # [1, context_dim], [1, belief_dim] or None
        context, belief = contexts[0], None if beliefs is None else beliefs[0]
        if not self.keep_frame:
            return context if belief is None else np.concatenate([context, belief])
        kept = {"context": context}
        if belief is not None:
            kept["belief"] = belief
        kept["frame"] = frames[0].permute(1, 2, 0).numpy().copy()
        return kept


def make_context_env(
    env_id: str | EnvSpec,
    model_dir: ModelOrDir,
    window: int | None = 16,
    device: str = "cpu",
    keep_frame: bool = False,
    timescale: str = "fast",
    world_model: WorldModelOrDir = None,
    **make_kwargs: Any,
) -> ContextObservation:
    """``ContextObservation(make_env(env_id, **make_kwargs), model_dir, ...)``; the entry point of ``aime_rl/Context-v0``.

    ``env_id`` is anything :func:`aime_rl.envs.resolve_env` takes (a preset name, a ``.toml`` path, a Gymnasium
    id; ``ALE/<Game>-v5`` ids are registered on demand and get the Atari conventions of
    :func:`aime_rl.envs.make_env`); ``make_kwargs`` are ``gym.make`` kwargs or Atari options (``frame_skip=...``,
    ``training=False``).

    Raises:
        ValueError: an unknown env (with close matches), ale-py missing for an Atari id, or what
            :class:`ContextObservation` raises.
    """
    return ContextObservation(
        make_env(env_id, **make_kwargs),
        model_dir,
        window=window,
        device=device,
        keep_frame=keep_frame,
        timescale=timescale,
        world_model=world_model,
    )
