"""The core the three context wrappers share: :class:`ContextCore` turns env frames into observations.

One :class:`ContextCore` per wrapper owns, for ``num_envs`` rows (one per sub-env; 1 for a single env):

- the frozen perception model (``CausalPerceiverIO``) and its batched context stream;
- with ``world_model=``, the ``VRNN`` and its batched belief filter (``VRNNFilter``), run beside the stream on the
  stream's tokens (one tokenizer pass per step) and fed each row's previous action;
- frame extraction: env frames (from the observations or from ``render()``) → model frames uint8
  ``[N, 3, h, w]``;
- the per-step observe: frames ``[num_envs, 3, h, w]`` → observations float32 ``[num_envs, context_dim]``
  (``[num_envs, context_dim + belief_dim]`` with a world model; ``[c_t, h_{t-1}, z_t]``);
- the per-row resets: rows restarted in place (``reset(mask)``), a selection of rows stepped without touching the
  stream (``observe_rows``: SB3 terminal observations), and rows restarted on their reset frames while the other
  rows keep their state (``restart_rows``: Gymnasium's ``reset_mask``).

The wrappers (:mod:`.context`, :mod:`.vec_context`, :mod:`.vector_context`) keep only their env API: when to step,
when to reset which rows, and where the frames and actions come from. :class:`ContextAttributes` gives each of them
the core's model, world model and settings as read-only attributes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.context_stream import ContextStream
from aime_rl.world_model import VRNN, VRNNFilter

from .models import ModelOrDir, WorldModelOrDir, resolve_model, resolve_world_model
from .preprocessing import FrameSource, to_model_frames

__all__ = [
    "ContextAttributes",
    "ContextCore",
    "belief_actions",
    "context_space",
    "fork_stream",
    "restore_rows",
]


def context_space(context_dim: int) -> spaces.Box:
    """``Box(-inf, inf, (context_dim,), float32)``: LayerNorm-ed contexts are unbounded."""
    return spaces.Box(-np.inf, np.inf, shape=(context_dim,), dtype=np.float32)


def belief_actions(space: spaces.Space, actions: Any, batch_size: int) -> np.ndarray:
    """Env actions → what ``VRNNFilter.step`` takes as ``prev_action``.

    ``Discrete`` (ids from ``space.start``): int64 ``[batch_size]`` ids from 0; otherwise float32
    ``[batch_size, A]``.
    """
    if isinstance(space, spaces.Discrete):
        return np.asarray(actions, dtype=np.int64).reshape(batch_size) - int(space.start)
    return np.asarray(actions, dtype=np.float32).reshape(batch_size, -1)


# -- copying and restoring rows of a stream's state --------------------------------------------------------------


def fork_stream(stream: Any, *models: nn.Module) -> Any:
    """An independent copy of a stream's state (caches, counters) that shares the ``models``' modules and weights.

    Works for a :class:`ContextStream` and for a world-model belief filter (``VRNNFilter``). It copies every row;
    ``stream.select(rows)`` copies only the rows it keeps.
    """
    shared: dict[int, Any] = {}
    for model in models:
        shared.update({id(module): module for module in model.modules()})
        shared.update({id(tensor): tensor for tensor in model.parameters()})
        shared.update({id(tensor): tensor for tensor in model.buffers()})
    return copy.deepcopy(stream, memo=shared)


def _merged_state(current: Any, saved: Any, rows: torch.Tensor, batch_size: int) -> Any:
    """``current`` with the rows where ``rows`` is True taken from ``saved`` (tensors with batch dim first)."""
    if isinstance(current, torch.Tensor):
        if current.dim() == 0 or current.shape[0] != batch_size:
            return current
        if not isinstance(saved, torch.Tensor) or saved.shape != current.shape:
            raise RuntimeError("the context stream's state changed shape; cannot restore rows")
        return torch.where(rows.view(-1, *[1] * (current.dim() - 1)), saved, current)
    if isinstance(current, dict):
        if not isinstance(saved, dict) or saved.keys() != current.keys():
            raise RuntimeError("the context stream's state changed structure; cannot restore rows")
        return {key: _merged_state(value, saved[key], rows, batch_size) for key, value in current.items()}
    if isinstance(current, nn.Module) or not hasattr(current, "__dict__"):
        return current  # shared model, or an immutable value (int, str, tuple, device, None)
    restore_rows(current, saved, rows, batch_size)
    return current


def restore_rows(current: Any, saved: Any, rows: torch.Tensor, batch_size: int) -> None:
    """In place: every per-row tensor of ``current``'s state takes the ``rows`` (bool ``[batch_size]``) of
    ``saved`` (a :func:`fork_stream` of it)."""
    for name, value in vars(current).items():
        if (value is None) != (getattr(saved, name, None) is None):
            raise RuntimeError("the context stream's state changed structure; cannot restore rows")
        setattr(current, name, _merged_state(value, getattr(saved, name, None), rows, batch_size))


# -- the core ----------------------------------------------------------------------------------------------------


class ContextCore:
    """Context stream (and belief filter) over ``num_envs`` rows: env frames in, observations out.

    Args:
        model_or_dir: a ``CausalPerceiverIO``, a ``SharedModel`` holding one, or a checkpoint directory.
        num_envs: rows of the stream (sub-envs; 1 for a single env).
        action_space: the action space of one sub-env (checked against the world model; actions for the filter).
        frame_source: ``"observation"`` (the observations are the frames) or ``"render"``.
        window, timescale: as in ``CausalPerceiverIO.stream``.
        device: where the models run; observations are numpy on the CPU.
        world_model: a ``VRNN`` on this perception model, a ``SharedModel`` holding one, its directory, or None.

    The stream and filter exist after :meth:`start` (``stream`` is None before). Raises ``ValueError`` for a bad
    checkpoint or a ``world_model`` that does not fit the perception model or ``action_space``.
    """

    def __init__(
        self,
        model_or_dir: ModelOrDir,
        num_envs: int,
        action_space: spaces.Space,
        frame_source: FrameSource,
        *,
        window: int | None = 16,
        device: str | torch.device = "cpu",
        timescale: str = "fast",
        world_model: WorldModelOrDir = None,
    ):
        self.frame_source = frame_source
        self.model: CausalPerceiverIO = resolve_model(model_or_dir, device)
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.window = window
        self.timescale = timescale
        self.action_space = action_space
        self.world_model: VRNN | None = resolve_world_model(
            world_model, self.model, self.device, action_space
        )
        self.belief_dim = 0 if self.world_model is None else self.world_model.belief_dim
        self.stream: ContextStream | None = None
        self.filter: VRNNFilter | None = None

    @property
    def observation_dim(self) -> int:
        """``context_dim + belief_dim`` (``belief_dim`` is 0 without a world model)."""
        return self.model.context_dim + self.belief_dim

    # -- episodes ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh stream (and belief filter) over all rows: every row starts an episode."""
        with torch.inference_mode():
            self.stream = self.model.stream(self.num_envs, window=self.window, timescale=self.timescale)
        self.filter = None if self.world_model is None else VRNNFilter(self.world_model, self.num_envs)

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Restart the rows where ``mask`` (bool ``[num_envs]``) is True, every row when None, in place."""
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        with torch.inference_mode():
            self.stream.reset(mask)
            if self.filter is not None:
                self.filter.reset(mask)

    # -- inputs -----------------------------------------------------------------------------------------------

    def model_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Env frames ``[H, W(, C)]`` or ``[N, H, W, C]`` uint8 → model frames uint8 ``[N, 3, h, w]`` (CPU)."""
        return to_model_frames(frames, self.model.frame_size)

    def frames(self, observations: Any, render: Callable[[], np.ndarray]) -> torch.Tensor:
        """This step's model frames uint8 ``[N, 3, h, w]`` (CPU): the ``observations`` when they are the frames,
        else what ``render()`` returns (``[N, H, W, C]``, or ``[H, W, C]`` for one env)."""
        return self.model_frames(observations if self.frame_source == "observation" else render())

    def filter_actions(self, actions: Any, batch_size: int | None = None) -> np.ndarray | None:
        """The env actions of ``batch_size`` rows (default ``num_envs``) as the filter's previous actions
        (:func:`belief_actions`); None without a world model or without actions."""
        if self.world_model is None or actions is None:
            return None
        return belief_actions(self.action_space, actions, self.num_envs if batch_size is None else batch_size)

    # -- stepping ---------------------------------------------------------------------------------------------

    def step(
        self, frames: torch.Tensor, actions: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One stream (and filter) step of all rows → contexts float32 ``[num_envs, context_dim]`` and beliefs
        float32 ``[num_envs, belief_dim]`` (None without a world model).

        ``frames``: uint8 ``[num_envs, 3, h, w]``; ``actions``: the filter's previous actions
        (:meth:`filter_actions`), ignored in rows that start an episode (None when all do).
        """
        return self._step(self.stream, self.filter, frames, actions)

    def observe(self, frames: torch.Tensor, actions: np.ndarray | None = None) -> np.ndarray:
        """:meth:`step` as observations, float32 ``[num_envs, context_dim (+ belief_dim)]``."""
        return _joined(*self.step(frames, actions))

    def observe_rows(self, rows: list[int], frames: torch.Tensor, actions: np.ndarray | None) -> np.ndarray:
        """Observations ``[k, ...]`` of the ``k`` ``rows`` stepped on ``frames`` (uint8 ``[k, 3, h, w]``).

        Steps a selection of those rows of the stream (and filter), a copy of their state only: the stream itself
        is not touched. ``actions``: the filter's previous actions of those rows (``[k]`` or ``[k, A]``).
        """
        index = torch.as_tensor(rows, dtype=torch.long)
        with torch.inference_mode():
            stream = self.stream.select(index)
            belief_filter = None if self.filter is None else self.filter.select(index)
        return _joined(*self._step(stream, belief_filter, frames, actions))

    def restart_rows(self, mask: np.ndarray, frames: torch.Tensor) -> np.ndarray:
        """Restart the rows where ``mask`` (bool ``[num_envs]``) is True on their ``frames`` (uint8
        ``[num_envs, 3, h, w]``); the other rows keep their stream and filter state.

        Returns observations ``[num_envs, ...]``, meaningful in the masked rows only: the stream is forked,
        stepped, and the other rows are restored from the fork.
        """
        rows = torch.as_tensor(mask, device=self.device)
        saved_filter, actions = None, None
        with torch.inference_mode():
            saved = fork_stream(self.stream, self.model)
            self.stream.reset(rows)
            if self.filter is not None:
                saved_filter = fork_stream(self.filter, self.model, self.world_model)
                self.filter.reset(rows)
                actions = self._placeholder_actions()  # the other rows' steps are undone below
        observations = self.observe(frames, actions)
        with torch.inference_mode():
            restore_rows(self.stream, saved, ~rows, self.num_envs)
            if self.filter is not None:
                restore_rows(self.filter, saved_filter, ~rows.to(self.filter.started.device), self.num_envs)
        return observations

    def _step(
        self, stream: ContextStream, belief_filter: VRNNFilter | None, frames: torch.Tensor, actions: Any
    ) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            contexts = stream.step(frames.to(self.device))  # [B, context_dim]
            beliefs = None
            if belief_filter is not None:  # the stream's tokens of this frame: no second tokenizer pass
                beliefs = belief_filter.step(contexts, stream.last_tokens, actions)  # [B, belief_dim]
        contexts = contexts.to("cpu", torch.float32).numpy().copy()
        if beliefs is not None:
            beliefs = beliefs.to("cpu", torch.float32).numpy().copy()
        return contexts, beliefs

    def _placeholder_actions(self) -> np.ndarray:
        """Zero actions ``[num_envs]`` (ids) or ``[num_envs, A]``, for filter steps whose result is discarded."""
        config = self.world_model.config
        if config.discrete:
            return np.zeros(self.num_envs, dtype=np.int64)
        return np.zeros((self.num_envs, config.action_dim), dtype=np.float32)


def _joined(contexts: np.ndarray, beliefs: np.ndarray | None) -> np.ndarray:
    """``[B, context_dim]`` (and ``[B, belief_dim]``) → ``[B, context_dim (+ belief_dim)]``."""
    return contexts if beliefs is None else np.concatenate([contexts, beliefs], axis=1)


class ContextAttributes:
    """Attributes of a wrapper whose ``_core`` is a :class:`ContextCore`: its model, world model and settings
    (read-only), its current stream (``_stream``, for tests), and :meth:`reset_context`."""

    _core: ContextCore

    @property
    def model(self) -> CausalPerceiverIO:
        """The frozen perception model (eval mode)."""
        return self._core.model

    @property
    def world_model(self) -> VRNN | None:
        """The ``VRNN`` whose belief is appended to the context, or None."""
        return self._core.world_model

    @property
    def belief_dim(self) -> int:
        """Size of the belief ``[h_{t-1}, z_t]`` appended to the context (0 without a world model)."""
        return self._core.belief_dim

    @property
    def device(self) -> torch.device:
        return self._core.device

    @property
    def window(self) -> int | None:
        return self._core.window

    @property
    def timescale(self) -> str:
        return self._core.timescale

    @property
    def frame_source(self) -> FrameSource:
        """``"observation"`` or ``"render"``: where the env's frames come from."""
        return self._core.frame_source

    @property
    def _stream(self) -> ContextStream | None:
        return self._core.stream

    def reset_context(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Restart the context (and the belief, with a world model) of the sub-envs where ``mask`` (bool
        ``[num_envs]``) is True, of all when None: their caches are emptied and they start again from the next
        frame, as at an episode's start; the episodes themselves go on. Call it after changing the weights of
        ``model`` or ``world_model``, so nothing the old weights computed is reused."""
        self._core.reset(mask)
