"""``VecContextObservation``: the context of every sub-env of an SB3 ``VecEnv`` from one batched stream.

One ``CausalPerceiverIO.stream(num_envs, window)`` runs in the main process; each ``step_wait`` feeds it the
frames of all sub-envs in one batched forward. Works with ``DummyVecEnv`` and ``SubprocVecEnv`` (the workers only
run envs: give them picklable factories such as :func:`env_factory`, and build no torch model before they start).

Terminal observations (SB3 resets a finished sub-env inside ``step`` and returns the reset observation, with the
last observation of the episode in ``infos[i]["terminal_observation"]``). A done row needs two stream steps in one
env step: the terminal frame (continuing its old episode) and the reset frame (starting a fresh one). The
non-done rows must take exactly one. With ``k`` done rows the wrapper does it as:

1. ``done_stream = stream.select(done_rows)``: an independent ``k``-row stream, a copy of the done rows' caches
   only (the model is shared, not copied); the belief filter likewise (``VRNNFilter.select``);
2. ``done_stream.step(terminal frames [k, 3, H, W])`` → the done rows' terminal contexts (and beliefs), written
   into ``infos[i]["terminal_observation"]``; the selection is then dropped;
3. ``stream.reset(mask=dones)``; ``stream.step(frames)`` (reset frames in the done rows) → the observations.

So the stream itself always takes one step per env step and is never touched by the extra step, and nothing has to
be restored. Steps without a done cost one batched forward over ``num_envs`` rows; steps with dones add a forward
over the ``k`` done rows only (plus a copy of their caches), so the extra cost is proportional to the number of
episodes that end — with many sub-envs some env ends on most steps, and a copy of the whole stream would nearly
double the wrapper's cost.

Frames come from the observations when they are images, otherwise from ``venv.get_images()`` (sub-envs made with
``render_mode="rgb_array"``). ``get_images()`` runs after SB3 has already reset a finished sub-env, so in that mode
the terminal frame is lost: the terminal observation is then the episode's last context before it (a warning says
so once). Put the rendered frame into the observation instead (``gymnasium.wrappers.AddRenderObservation`` inside
the env factory, as :func:`env_factory` does with ``render_observation=True``) to get exact terminal contexts.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from aime_rl.envs import EnvSpec, make_env, resolve_env

from .core import ContextAttributes, ContextCore, context_space
from .models import ModelOrDir, WorldModelOrDir
from .preprocessing import frame_source_from

__all__ = ["VecContextObservation", "env_factory", "make_context_vec_env"]


def _make_env(
    env: str | EnvSpec,
    render_observation: bool,
    wrappers: tuple,
    make_kwargs: dict[str, Any],
    training: bool = True,
    monitor: bool = False,
) -> gym.Env:
    """The env of :func:`env_factory` (unpickling this function in a worker imports ``aime_rl``, which registers
    the built-in envs)."""
    made = make_env(env, training=training, monitor=monitor, **make_kwargs)
    for wrapper in wrappers:
        made = wrapper(made)
    if render_observation:
        made = gym.wrappers.AddRenderObservation(made, render_only=True)
    return made


def env_factory(
    env_id: str | EnvSpec,
    render_observation: bool = False,
    wrappers: tuple = (),
    *,
    training: bool = True,
    monitor: bool = False,
    **make_kwargs: Any,
) -> functools.partial:
    """A picklable ``() -> gym.Env`` for ``DummyVecEnv`` / ``SubprocVecEnv`` (imports ``aime_rl`` in the worker).

    The env is :func:`aime_rl.envs.make_env` of ``env_id`` (a preset name, a ``.toml`` path, a Gymnasium id
    such as ``ALE/Pong-v5`` — registered on demand — or an :class:`~aime_rl.envs.EnvSpec`), so Atari envs get
    their conventions (frame skip with max-pooling, NOOP starts, sticky actions, FIRE on reset).

    Args:
        env_id: anything :func:`aime_rl.envs.resolve_env` takes; resolved here, so a bad name fails now.
        render_observation: replace the observation by the rendered frame (needs ``render_mode="rgb_array"``):
            state-based envs then give exact terminal contexts under :class:`VecContextObservation`.
        wrappers: applied to the env first, in order (e.g. ``Monitor``).
        training: as in :func:`aime_rl.envs.make_env` (False: no life-loss episode ends).
        monitor: SB3's ``Monitor`` inside the Atari episode wrappers (statistics of whole games).
        **make_kwargs: ``gym.make`` kwargs and Atari options (``frame_skip=...``), as in ``make_env``.

    Raises:
        ValueError: what :func:`aime_rl.envs.resolve_env` and :meth:`aime_rl.envs.EnvSpec.with_overrides` raise.
    """
    spec = resolve_env(env_id)
    if make_kwargs:
        spec = spec.with_overrides(**make_kwargs)
    return functools.partial(_make_env, spec, render_observation, tuple(wrappers), {}, training, monitor)


class VecContextObservation(VecEnvWrapper, ContextAttributes):
    """Observation of every sub-env = its causal context, float32 ``[num_envs, context_dim]``, one batched forward.

    Args:
        venv: an SB3 ``VecEnv`` with uint8 image observations ``[H, W, C]`` or sub-envs made with
            ``render_mode="rgb_array"`` (frames from ``get_images()``).
        model_or_dir: a ``CausalPerceiverIO`` or a checkpoint directory (loaded here, in the main process).
        window: frames the context attends to, as in ``CausalPerceiverIO.stream``.
        device: where the model runs; observations are numpy on the CPU.
        timescale: the stream's timescale.
        world_model: a trained ``VRNN`` (on this perception model) or its directory: observations become
            ``[c_t, belief_t]`` with the belief ``[h_{t-1}, z_t]`` of the VRNN filter run online (one batched step
            per env step, reset per episode, fed the previous action of each sub-env).

    ``infos[i]["terminal_observation"]`` of a finished sub-env holds the context (and belief) of its terminal frame
    (see the module docstring for how it is computed).
    """

    def __init__(
        self,
        venv: VecEnv,
        model_or_dir: ModelOrDir,
        window: int | None = 16,
        device: str | torch.device = "cpu",
        timescale: str = "fast",
        world_model: WorldModelOrDir = None,
    ):
        self._core = ContextCore(
            model_or_dir,
            venv.num_envs,
            venv.action_space,
            frame_source_from(
                venv.observation_space, getattr(venv, "render_mode", None), f"VecEnv {type(venv).__name__}"
            ),
            window=window,
            device=device,
            timescale=timescale,
            world_model=world_model,
        )
        super().__init__(venv, observation_space=context_space(self._core.observation_dim))
        self._core.start()
        self._actions: np.ndarray | None = None
        self._last_contexts = np.zeros((self.num_envs, *self.observation_space.shape), dtype=np.float32)
        self._warned_lost_terminal_frames = False

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).copy()
        self.venv.step_async(actions)

    def _frames(self, observations: np.ndarray) -> torch.Tensor:
        """Frames of all sub-envs, uint8 ``[num_envs, 3, h, w]``."""
        return self._core.frames(observations, lambda: np.stack(self.venv.get_images()))

    def reset(self) -> np.ndarray:
        """Reset all sub-envs and the stream; contexts of the first frames ``[num_envs, context_dim]``."""
        observations = self.venv.reset()
        self._core.start()
        self._last_contexts = self._core.observe(self._frames(observations))
        return self._last_contexts.copy()

    def step_wait(self) -> VecEnvStepReturn:
        """Step all sub-envs; contexts ``[num_envs, context_dim]``, terminal observations transformed."""
        observations, rewards, dones, infos = self.venv.step_wait()
        frames = self._frames(observations)
        done = np.asarray(dones, dtype=bool)
        if done.any():
            self._write_terminal_contexts(done, infos)
            self._core.reset(done)
        self._last_contexts = self._core.observe(frames, self._core.filter_actions(self._actions))
        return self._last_contexts.copy(), rewards, dones, infos

    def _write_terminal_contexts(self, done: np.ndarray, infos: list[dict]) -> None:
        """Replace ``infos[i]["terminal_observation"]`` of the done rows by the context of their terminal frame.

        A selection of those rows of the stream (and filter) is stepped on the terminal frames; the stream itself
        is not touched (:meth:`ContextCore.observe_rows`).
        """
        rows = [int(i) for i in np.flatnonzero(done) if "terminal_observation" in infos[i]]
        if not rows:
            return
        if self.frame_source == "render":
            self._warn_lost_terminal_frames()
            for i in rows:
                infos[i]["terminal_observation"] = self._last_contexts[i].copy()
            return
        terminal_frames = self._core.model_frames(np.stack([infos[i]["terminal_observation"] for i in rows]))
        actions = None if self._actions is None else self._core.filter_actions(self._actions[rows], len(rows))
        for i, observation in zip(rows, self._core.observe_rows(rows, terminal_frames, actions), strict=True):
            infos[i]["terminal_observation"] = observation.copy()

    def _warn_lost_terminal_frames(self) -> None:
        if not self._warned_lost_terminal_frames:
            warnings.warn(
                "VecContextObservation reads frames with get_images(), which SB3 calls after resetting a finished "
                "sub-env: the terminal frame is lost and terminal_observation is the episode's previous context. "
                "Wrap the sub-envs with gymnasium.wrappers.AddRenderObservation (env_factory(..., "
                "render_observation=True)) for exact terminal contexts.",
                stacklevel=3,
            )
            self._warned_lost_terminal_frames = True


def make_context_vec_env(
    env_id: str | EnvSpec,
    model_or_dir: ModelOrDir,
    n_envs: int = 8,
    window: int | None = 16,
    vec_env_cls: type[VecEnv] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    monitor: bool = True,
    training: bool = True,
    **make_kwargs: Any,
) -> VecContextObservation:
    """``n_envs`` copies of an env in ``vec_env_cls`` (default ``DummyVecEnv``) under one context stream.

    ``env_id`` is anything :func:`aime_rl.envs.resolve_env` takes: a preset name (``"pong"``), a ``.toml`` path or
    a Gymnasium id (``ALE/<Game>-v5`` ids are registered on demand and get the Atari conventions). Envs whose
    frames come from ``render()`` (preset ``frame_source = "render"``, or state-based envs made with
    ``render_mode="rgb_array"``) observe their rendered frame (exact terminal contexts). Each sub-env is wrapped
    in SB3's ``Monitor`` (episode statistics; whole games for Atari) unless ``monitor=False``. The model is loaded
    after the workers started (``SubprocVecEnv``), in this process.

    Raises:
        ValueError: an unknown env, ale-py missing for an Atari id, an env without frames, or a bad checkpoint.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    spec = resolve_env(env_id)
    if make_kwargs:
        spec = spec.with_overrides(**make_kwargs)
    probe = make_env(spec, training=training)
    try:
        detected = frame_source_from(probe.observation_space, probe.render_mode, spec.name)
    finally:
        probe.close()
    render_observation = spec.frame_source == "render" or detected == "render"
    factory = env_factory(spec, render_observation=render_observation, training=training, monitor=monitor)
    venv = (vec_env_cls or DummyVecEnv)([factory] * n_envs, **(vec_env_kwargs or {}))
    if seed is not None:
        venv.seed(seed)
    if isinstance(model_or_dir, (str, os.PathLike)):
        model_or_dir = os.fspath(model_or_dir)
    return VecContextObservation(venv, model_or_dir, window=window, device=device)
