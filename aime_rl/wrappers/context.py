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
from typing import TYPE_CHECKING, Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from aime_rl.envs import EnvSpec, make_env
from aime_rl.perception import CausalPerceiverIO

if TYPE_CHECKING:
    from aime_rl.world_model import VRNN

from .preprocessing import frame_source_for, load_perception_model, to_model_frames

__all__ = [
    "ContextObservation",
    "SharedModel",
    "belief_actions",
    "context_space",
    "make_context_env",
    "resolve_world_model",
]


class SharedModel:
    """A reference to a model that ``copy.deepcopy`` shares instead of copying (for recorded constructor args).

    Holds a ``CausalPerceiverIO`` (``model_or_dir``) or a ``VRNN`` (``world_model``).
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __deepcopy__(self, memo: dict) -> SharedModel:
        return self

    def __repr__(self) -> str:
        return f"SharedModel({type(self.model).__name__}, context_dim={self.model.context_dim})"


ModelOrDir = CausalPerceiverIO | SharedModel | str | os.PathLike
WorldModelOrDir = Any  # a VRNN, a SharedModel holding one, or a directory written by VRNN.save_pretrained


def context_space(context_dim: int) -> spaces.Box:
    """``Box(-inf, inf, (context_dim,), float32)``: LayerNorm-ed contexts are unbounded."""
    return spaces.Box(-np.inf, np.inf, shape=(context_dim,), dtype=np.float32)


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


def resolve_model(model_or_dir: ModelOrDir, device: str | torch.device = "cpu") -> CausalPerceiverIO:
    """The eval-mode model behind a model, a :class:`SharedModel` or a checkpoint directory."""
    if isinstance(model_or_dir, SharedModel):
        model_or_dir = model_or_dir.model
    return load_perception_model(model_or_dir, device)


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


def resolve_world_model(
    world_model: WorldModelOrDir,
    model: CausalPerceiverIO,
    device: str | torch.device = "cpu",
    action_space: spaces.Space | None = None,
) -> VRNN | None:
    """The eval-mode ``VRNN`` behind ``world_model`` (None stays None), checked against the perception ``model``.

    A directory is loaded with ``VRNN.from_pretrained(directory, model)``. Raises ``ValueError`` naming
    ``world_model`` when its sizes (``context_dim``, token grid, quantizer heads, codes) are not the perception
    model's, or when ``action_space`` (the env's, per sub-env) is not the VRNN's (``Discrete(action_dim)`` or a
    ``Box`` of ``action_dim`` elements).
    """
    from aime_rl.world_model import VRNN
    from aime_rl.world_model.env import _check_action_space
    from aime_rl.world_model.vrnn import _normalise, _perception_spec

    if world_model is None:
        return None
    if isinstance(world_model, SharedModel):
        world_model = world_model.model
    if isinstance(world_model, (str, os.PathLike)):
        try:
            world_model = VRNN.from_pretrained(world_model, model, map_location=device)
        except ValueError as error:
            raise ValueError(f"world_model {os.fspath(world_model)!r} cannot be loaded: {error}") from error
    if not isinstance(world_model, VRNN):
        raise ValueError(
            f"world_model must be a VRNN, a checkpoint directory or None, got {type(world_model).__name__}"
        )
    if world_model.perceiver is not model:
        for name, value in _perception_spec(model).items():
            got = getattr(world_model.config, name)
            if _normalise(got) != _normalise(value):
                raise ValueError(
                    f"world_model has {name}={got!r} but the perception model has {name}={value!r}: "
                    "use a VRNN trained on this perception model"
                )
    if action_space is not None:
        try:
            _check_action_space(action_space, world_model.config)
        except ValueError as error:
            raise ValueError(f"world_model does not fit the env's actions: {error}") from error
    return world_model.eval()


def belief_actions(space: spaces.Space, actions: Any, batch_size: int) -> np.ndarray:
    """Env actions → what ``VRNNFilter.step`` takes as ``prev_action``.

    ``Discrete`` (ids from ``space.start``): int64 ``[batch_size]`` ids from 0; otherwise float32
    ``[batch_size, A]``.
    """
    if isinstance(space, spaces.Discrete):
        return np.asarray(actions, dtype=np.int64).reshape(batch_size) - int(space.start)
    return np.asarray(actions, dtype=np.float32).reshape(batch_size, -1)


class ContextObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
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
        self.frame_source = frame_source_for(env)
        self.model = resolve_model(model_or_dir, device)
        self.device = torch.device(device)
        self.window = window
        self.keep_frame = keep_frame
        with torch.inference_mode():
            self._stream = self.model.stream(1, window=window, timescale=timescale)
        self.world_model: VRNN | None = resolve_world_model(world_model, self.model, device, env.action_space)
        self.belief_dim = 0 if self.world_model is None else self.world_model.belief_dim
        self._filter = None
        if self.world_model is not None:
            from aime_rl.world_model import VRNNFilter

            self._filter = VRNNFilter(self.world_model, 1)
        self._prev_action: Any = None
        self.observation_space = self._make_observation_space()

    def _make_observation_space(self) -> spaces.Space:
        if not self.keep_frame:
            return context_space(self.model.context_dim + self.belief_dim)
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
        with torch.inference_mode():
            self._stream.reset()
            if self._filter is not None:
                self._filter.reset()
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
        frame = observation if self.frame_source == "observation" else self.env.render()
        frames = to_model_frames(frame, self.model.frame_size)  # uint8 [1, 3, h, w]
        with torch.inference_mode():
            context = self._stream.step(frames.to(self.device))  # [1, context_dim]
            belief = None
            if self._filter is not None:
                action = self._prev_action
                if action is not None:
                    action = belief_actions(self.action_space, [action], 1)
                # the stream's tokens of this frame [1, h, w(, G)]: no second tokenizer pass
                belief = self._filter.step(context, self._stream.last_tokens, action)  # [1, belief_dim]
        context = context[0].to("cpu", torch.float32).numpy().copy()
        belief = None if belief is None else belief[0].to("cpu", torch.float32).numpy().copy()
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
    import aime_rl  # noqa: F401  (registers the built-in envs, also in fresh worker processes)

    return ContextObservation(
        make_env(env_id, **make_kwargs),
        model_dir,
        window=window,
        device=device,
        keep_frame=keep_frame,
        timescale=timescale,
        world_model=world_model,
    )
