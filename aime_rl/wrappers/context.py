"""``ContextObservation``: a Gymnasium wrapper whose observation is the causal context of the frames so far.

Every step the env's frame (its image observation, or ``render()`` for state-based envs made with
``render_mode="rgb_array"``) is resized to the model's frame size and fed to a ``CausalPerceiverIO`` context stream;
the observation is the context vector of that frame, float32 ``[context_dim]``. ``reset()`` restarts the stream, so
nothing leaks across episodes. The model runs frozen, in eval mode, under ``torch.inference_mode()``.

The context comes out of a LayerNorm: it is roughly zero-mean and unit-scale per vector but not bounded, so the
observation space is ``Box(-inf, inf, (context_dim,), float32)``.

One-liners::

    env = ContextObservation(gym.make("aime_rl/Catch-v0"), "checkpoints/perceiver", window=16)
    env = gym.make("aime_rl/Context-v0", env_id="aime_rl/Catch-v0", model_dir="checkpoints/perceiver")

(``aime_rl/Context-v0`` is registered by ``aime_rl.wrappers.register_context_env()``, which ``import aime_rl``
runs; any ``gym.make`` kwargs of the inner env can be added, e.g. ``render_mode="rgb_array"`` for
``env_id="CartPole-v1"``.)

Constructor arguments are recorded for ``env.spec`` without deep-copying a model: a checkpoint directory is recorded
as a string, so ``gym.make(env.spec)`` rebuilds the wrapped env (and ``env.spec.to_json()`` works); a model instance
is recorded behind a :class:`SharedModel` reference that copies share (the spec then rebuilds with the same model
object, and is not JSON-serialisable).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from aime_rl.perception import CausalPerceiverIO

from .preprocessing import frame_source_for, load_perception_model, to_model_frames

__all__ = ["ContextObservation", "SharedModel", "context_space", "make_context_env"]


class SharedModel:
    """A reference to a model that ``copy.deepcopy`` shares instead of copying (for recorded constructor args)."""

    def __init__(self, model: CausalPerceiverIO):
        self.model = model

    def __deepcopy__(self, memo: dict) -> SharedModel:
        return self

    def __repr__(self) -> str:
        return f"SharedModel({type(self.model).__name__}, context_dim={self.model.context_dim})"


ModelOrDir = CausalPerceiverIO | SharedModel | str | os.PathLike


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


class ContextObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observation = causal context of the frames of this episode so far, float32 ``[context_dim]``.

    Args:
        env: a pixel env (uint8 image observations) or an env made with ``render_mode="rgb_array"``.
        model_or_dir: a ``CausalPerceiverIO`` or a directory written by its ``save_pretrained``.
        window: frames the context attends to (``t - window + 1 … t``), as in ``CausalPerceiverIO.stream``.
        device: where the model runs; observations are always numpy on the CPU.
        keep_frame: observe ``{"context": [context_dim] float32, "frame": [h, w, 3] uint8}`` where ``frame`` is the
            model-resolution frame the context saw.
        timescale: the stream's timescale (``"fast"`` = per-frame context).

    Raises ``ValueError`` for an env without frames, a missing checkpoint or a bad ``window``.
    """

    def __init__(
        self,
        env: gym.Env,
        model_or_dir: ModelOrDir,
        window: int | None = 16,
        device: str | torch.device = "cpu",
        keep_frame: bool = False,
        timescale: str = "fast",
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model_or_dir=_recordable(model_or_dir),
            window=window,
            device=str(device),
            keep_frame=keep_frame,
            timescale=timescale,
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
        self.observation_space = self._make_observation_space()

    def _make_observation_space(self) -> spaces.Space:
        context = context_space(self.model.context_dim)
        if not self.keep_frame:
            return context
        height, width = self.model.frame_size
        frame = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
        return spaces.Dict({"context": context, "frame": frame})

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restart the context stream, then reset the env and observe its first frame."""
        with torch.inference_mode():
            self._stream.reset()
        return super().reset(seed=seed, options=options)

    def observation(self, observation: Any) -> np.ndarray | dict[str, np.ndarray]:
        """The env's current frame → a fresh float32 context ``[context_dim]`` (plus the frame if kept)."""
        frame = observation if self.frame_source == "observation" else self.env.render()
        frames = to_model_frames(frame, self.model.frame_size)  # uint8 [1, 3, h, w]
        with torch.inference_mode():
            context = self._stream.step(frames.to(self.device))
        context = context[0].to("cpu", torch.float32).numpy().copy()
        if not self.keep_frame:
            return context
        return {"context": context, "frame": frames[0].permute(1, 2, 0).numpy().copy()}


def make_context_env(
    env_id: str,
    model_dir: ModelOrDir,
    window: int | None = 16,
    device: str = "cpu",
    keep_frame: bool = False,
    timescale: str = "fast",
    **make_kwargs: Any,
) -> ContextObservation:
    """``ContextObservation(gym.make(env_id, **make_kwargs), model_dir, ...)``; the entry point of ``aime_rl/Context-v0``."""
    import aime_rl  # noqa: F401  (registers the built-in envs, also in fresh worker processes)

    return ContextObservation(
        gym.make(env_id, **make_kwargs),
        model_dir,
        window=window,
        device=device,
        keep_frame=keep_frame,
        timescale=timescale,
    )
