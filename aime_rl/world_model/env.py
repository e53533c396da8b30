"""A learned VRNN as a Gymnasium environment, and a streaming VRNN filter for real environments.

:class:`WorldModelEnv` steps the VRNN's prior ("dreams"): observations are the imagined context ``ĉ_t`` (and
optionally the belief ``[h_{t-1}, z_t]``), rewards and terminations come from the VRNN's heads, and every episode
starts from a real state: ``observe_frames`` consecutive replay frames filtered through the VRNN's posterior.

:class:`VRNNFilter` runs the posterior online, one real frame per call, at a cost independent of t; its belief is
the same feature :class:`WorldModelEnv` exposes, so a policy trained in imagination can read it in the real env.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ..replay.store import ReplayStore
from ..utils.validation import check_batch_size, row_index
from .vrnn import VRNN, StepState

__all__ = ["VRNNFilter", "WorldModelEnv", "check_action_space"]


class VRNNFilter:
    """Online posterior filtering for ``batch_size`` parallel streams (e.g. one per vectorised env).

    At real step t call ``step(c_t, x_t, a_{t-1})``: it applies the previous action (``h_{t-1} = LSTM([z_{t-1},
    c_{t-1}, a_{t-1}], h_{t-2})``, skipped for rows that just started), then ``z_t ~ q(z | e(x_t), c_t,
    h_{t-1})`` (the mean with ``sample=False``), and returns the belief ``[h_{t-1}, z_t]`` ``[B, H + Z]``. The
    returned beliefs equal ``vrnn.observe(...)``'s ``[h_prev, z]`` offline (with ``sample=False``).

    ``frame`` can be the frame ``[B, 3, H, W]`` (tokenized by this filter's own causal tokenizer stream), its token
    ids ``[B, h, w(, G)]`` (integer; e.g. from a stream you already run), or a frame embedding ``[B, embed_dim]``.
    Pass either tokens or frames consistently: the tokenizer stream only sees the frames it is given.
    ``reset(mask)`` restarts rows (bool ``[B]``) as new episodes; ``select(rows)`` is an independent filter over
    some of the rows.

    NaN/inf in the context, a frame embedding or the action of a row that continues its episode raise
    ``ValueError`` before anything changes (one bad value would otherwise poison the row's state for the rest of
    the episode).
    """

    def __init__(
        self,
        vrnn: VRNN,
        batch_size: int,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ):
        batch_size = check_batch_size(batch_size)
        self.vrnn = vrnn
        self.batch_size = batch_size
        self.sample = sample
        self.generator = generator
        self.state: StepState | None = None
        self.started = torch.zeros(batch_size, dtype=torch.bool, device=vrnn.device)
        self._tokenizer_stream = None

    @property
    def belief_dim(self) -> int:
        return self.vrnn.belief_dim

    @torch.no_grad()
    def step(
        self, context: torch.Tensor, frame: torch.Tensor, prev_action: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """One real step: context ``[B, D]``, frame (see class doc), previous action ``[B]`` ids or ``[B, A]``.

        ``prev_action`` is ignored for rows that start an episode at this call (it may be None when all do).
        Returns the belief ``[B, H + Z]``. NaN/inf in ``context``, a frame embedding or the action of a continuing
        row raise ``ValueError`` (the filter's state is left as it was).
        """
        vrnn, b = self.vrnn, self.batch_size
        context = torch.as_tensor(context, device=vrnn.device)
        if context.shape != (b, vrnn.context_dim):
            raise ValueError(f"context must have shape [{b}, {vrnn.context_dim}], got {tuple(context.shape)}")
        _check_finite(context, "context")
        context = context.to(vrnn.rnn.weight_ih.dtype)
        action = None
        if self.state is not None and bool(self.started.any()):
            if prev_action is None:
                raise ValueError("prev_action must be given for rows that continue an episode")
            action = vrnn.encode_actions(self._mask_action(prev_action), (b,))
        embedding = self._embedding(frame)
        carry = vrnn.initial_state(b)
        if action is not None:
            moved = vrnn.transition(self.state, action)
            keep = self.started.view(-1, 1)
            carry.h = torch.where(keep, moved.h, carry.h)
            carry.cell = torch.where(keep, moved.cell, carry.cell)
        self.state = vrnn.posterior_step(
            carry, embedding, context, sample=self.sample, generator=self.generator
        )
        self.started.fill_(True)
        return self.state.belief

    def select(self, rows: torch.Tensor | np.ndarray) -> VRNNFilter:
        """An independent filter over the chosen rows: bool mask ``[B]`` or int64 indices ``[k]`` → batch ``k``.

        It shares the VRNN (and the ``generator``, when one was given: sampling from the selection advances it)
        and holds its own copies of the rows' state (``h``, ``cell`` ``[k, H]``, ``z`` ``[k, Z]``, ``context``
        ``[k, D]``), ``started`` ``[k]`` and its own tokenizer stream's rows (when it tokenizes frames itself). So
        ``select(rows).step(c[rows], x[rows], a[rows])`` gives the beliefs ``[k, H + Z]`` that ``step(c, x, a)``
        gives in those rows, and stepping the selection never changes this filter. Raises ``ValueError`` naming
        ``rows``.
        """
        index = row_index(rows, self.batch_size, self.started.device)
        selected = copy.copy(self)
        selected.batch_size = index.numel()
        selected.state = None if self.state is None else self.state.index(index.to(self.state.h.device))
        selected.started = self.started[index]
        if self._tokenizer_stream is not None:
            selected._tokenizer_stream = self._tokenizer_stream.select(index)
        return selected

    def reset(self, mask: torch.Tensor | np.ndarray | None = None) -> None:
        """Restart the rows where ``mask`` (bool ``[B]``) is True (all rows when None)."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool)
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.started.device)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"mask must be bool [{self.batch_size}], got shape {tuple(mask.shape)}")
        self.started &= ~mask
        if self._tokenizer_stream is not None:
            self._tokenizer_stream.reset(mask)

    def _mask_action(self, prev_action) -> torch.Tensor:
        """Zero the actions of rows that start now (they may hold a stale value from the last episode)."""
        action = torch.as_tensor(np.asarray(prev_action) if not torch.is_tensor(prev_action) else prev_action)
        action = action.to(self.started.device)
        if action.shape[:1] != (self.batch_size,):
            raise ValueError(
                f"prev_action must have batch size {self.batch_size}, got shape {tuple(action.shape)}"
            )
        keep = self.started.view(-1, *([1] * (action.dim() - 1)))
        action = torch.where(keep, action, torch.zeros_like(action))
        if action.is_floating_point() and not bool(torch.isfinite(action).all()):
            rows = (
                (~torch.isfinite(action)).reshape(self.batch_size, -1).any(-1).nonzero().squeeze(1).tolist()
            )
            raise ValueError(
                f"prev_action contains NaN or inf values in rows {rows} (rows that continue an episode), "
                f"got shape {tuple(action.shape)}"
            )
        return action

    def _embedding(self, frame: torch.Tensor) -> torch.Tensor:
        vrnn, b = self.vrnn, self.batch_size
        frame = torch.as_tensor(frame, device=vrnn.device)
        if frame.shape[:1] != (b,):
            raise ValueError(f"frame must have batch size {b}, got shape {tuple(frame.shape)}")
        if frame.is_floating_point() and frame.dim() == 2:
            if frame.shape[1] != vrnn.config.embed_dim:
                raise ValueError(
                    f"frame embedding must be [{b}, {vrnn.config.embed_dim}], got {tuple(frame.shape)}"
                )
            _check_finite(frame, "frame embedding")
            return frame.to(vrnn.rnn.weight_ih.dtype)
        if frame.is_floating_point() or frame.dtype == torch.uint8:  # an image [B, 3, H, W]
            if self._tokenizer_stream is None:
                self._tokenizer_stream = vrnn.perceiver.tokenizer.stream(b)
            tokens = self._tokenizer_stream.step(frame)
        else:  # integer token ids [B, h, w(, G)]
            tokens = frame
        tokens = vrnn._check_tokens(tokens.unsqueeze(1)).squeeze(1)
        return vrnn.embed_tokens(tokens)


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when a float ``tensor`` (any shape) holds NaN or inf."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or inf values (shape {tuple(tensor.shape)})")


class WorldModelEnv(gym.Env):
    """Gymnasium env that imagines with a trained :class:`VRNN`.

    Args:
        vrnn: the world model (used in eval mode, under ``torch.inference_mode``).
        store: a :class:`ReplayStore` or its directory: where starting states come from.
        observe_frames: real frames ``k`` filtered through the posterior at each reset.
        max_episode_steps: truncation limit of an imagined episode.
        include_belief: observations ``[ĉ_t, h_{t-1}, z_t]`` (``Box(D + H + Z)``) instead of ``ĉ_t`` (``Box(D)``).
        action_space: the real env's action space (default: ``Discrete(action_dim)`` or ``Box(-1, 1, (A,))``).
        sample: sample the prior and posterior (``False``: means / most likely component: a deterministic dream).
        start_batch_size: replay windows filtered at once; resets pop from this pool.
        episode_ids: restrict starts to these replay episode indices (e.g. a training split).
        render_mode: ``"rgb_array"`` renders the imagined frame (the frame head's argmax tokens, decoded).

    Dynamics of ``step(a_t)``: ``h_t = LSTM([z_t, ĉ_t, a_t], h_{t-1})``; reward ``r̂_{t+1}`` and continue
    probability ``p`` from ``h_t``; ``z_{t+1} ~ p(z | h_t, ĉ_t)``; ``ĉ_{t+1} = g(h_t, z_{t+1})``. ``terminated``
    when ``p < 0.5``; ``truncated`` after ``max_episode_steps`` steps. ``info["continue_probability"] = p``.

    Reset: a window of ``k + 1`` consecutive rows is drawn (uniformly over windows, with the env's ``np_random``)
    so that frame ``k - 1`` is not an episode's final observation; the posterior filters its first ``k`` frames and
    the episode starts at the state of frame ``k - 1`` (its real context is the first observation).
    ``info`` has ``episode_index`` and ``start_row`` (the window's replay episode and the row of frame ``k - 1``).
    With a seed, resets and dreams are deterministic.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        vrnn: VRNN,
        store: ReplayStore | str | os.PathLike,
        observe_frames: int = 4,
        max_episode_steps: int = 200,
        include_belief: bool = False,
        action_space: spaces.Space | None = None,
        sample: bool = True,
        start_batch_size: int = 16,
        episode_ids: np.ndarray | list[int] | None = None,
        render_mode: str | None = None,
    ):
        if observe_frames < 1:
            raise ValueError(f"observe_frames must be >= 1, got {observe_frames}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if start_batch_size < 1:
            raise ValueError(f"start_batch_size must be >= 1, got {start_batch_size}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.vrnn = vrnn.eval()
        self.store = store if isinstance(store, ReplayStore) else ReplayStore.open(store)
        self.observe_frames = observe_frames
        self.max_episode_steps = max_episode_steps
        self.include_belief = include_belief
        self.sample = sample
        self.start_batch_size = start_batch_size
        self.episode_ids = None if episode_ids is None else np.asarray(episode_ids, dtype=np.int64)
        self.render_mode = render_mode
        self.store.window_weights(observe_frames + 1, episode_ids=self.episode_ids)  # fail fast: enough data?

        config = vrnn.config
        self.action_space = action_space if action_space is not None else _default_action_space(config)
        check_action_space(self.action_space, config)
        size = vrnn.context_dim + (vrnn.belief_dim if include_belief else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)

        self._generator: torch.Generator | None = None
        self._pool: list[tuple[StepState, int, int]] = []
        self._state: StepState | None = None
        self._elapsed = 0

    # -- gymnasium API -------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._generator is None:
            self._generator = torch.Generator(device=self.vrnn.device)
            self._generator.manual_seed(int(self.np_random.integers(2**62)))
            self._pool = []
        if not self._pool:
            self._pool = self._filter_starts()
        self._state, episode_index, start_row = self._pool.pop()
        self._elapsed = 0
        return self._observation(), {"episode_index": episode_index, "start_row": start_row}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        vrnn = self.vrnn
        with torch.inference_mode():
            encoded = vrnn.encode_actions(self._action_tensor(action), (1,))
            carry = vrnn.transition(self._state, encoded)
            reward = float(vrnn.predict_reward(carry.h)[0])
            continue_probability = float(vrnn.predict_continue(carry.h)[0])
            self._state = vrnn.prior_step(carry, sample=self.sample, generator=self._generator)
        self._elapsed += 1
        terminated = continue_probability < 0.5
        truncated = not terminated and self._elapsed >= self.max_episode_steps
        info = {"continue_probability": continue_probability}
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The imagined frame ``uint8 [H, W, 3]`` (``render_mode="rgb_array"``), else None."""
        if self.render_mode is None or self._state is None:
            return None
        with torch.inference_mode():
            tokens = self.vrnn.predict_tokens(self._state.belief).argmax(-1)  # [1, h, w, G]
            frame = self.vrnn.decode_tokens(tokens.unsqueeze(1))[0, 0]
        return (frame.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        parts = [self._state.context]
        if self.include_belief:
            parts.append(self._state.belief)
        return torch.cat(parts, -1)[0].float().cpu().numpy().astype(np.float32, copy=True)

    def _action_tensor(self, action) -> torch.Tensor:
        if isinstance(self.action_space, spaces.Discrete):
            return torch.tensor([int(action) - int(self.action_space.start)], dtype=torch.long)
        return torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)

    @torch.inference_mode()
    def _filter_starts(self) -> list[tuple[StepState, int, int]]:
        """Filter ``start_batch_size`` replay windows; a list of (state [1, ·], episode index, row) to pop from."""
        k = self.observe_frames
        batch = self.store.sample_windows(
            self.start_batch_size, k + 1, rng=self.np_random, episode_ids=self.episode_ids
        )
        device = self.vrnn.device
        observed = self.vrnn.observe(
            batch["frames"][:, :k].to(device),
            batch["actions"][:, :k].to(device),
            sample=self.sample,
            generator=self._generator,
        )
        last = observed["last"]
        starts = [
            (last.index(slice(i, i + 1)), int(batch["episode_index"][i]), int(batch["start"][i]) + k - 1)
            for i in range(self.start_batch_size)
        ]
        return starts[::-1]  # pop() then returns them in sampling order


def _default_action_space(config) -> spaces.Space:
    if config.discrete:
        return spaces.Discrete(config.action_dim)
    return spaces.Box(-1.0, 1.0, (config.action_dim,), dtype=np.float32)


def check_action_space(space: spaces.Space, config) -> None:
    """Raise ``ValueError`` unless ``space`` fits the VRNN: ``Discrete(action_dim)`` or ``action_dim`` floats."""
    if config.discrete:
        if not isinstance(space, spaces.Discrete) or int(space.n) != config.action_dim:
            raise ValueError(f"action_space must be Discrete({config.action_dim}) for this VRNN, got {space}")
    elif not isinstance(space, spaces.Box) or int(np.prod(space.shape)) != config.action_dim:
        raise ValueError(
            f"action_space must be a Box with {config.action_dim} elements for this VRNN, got {space}"
        )
