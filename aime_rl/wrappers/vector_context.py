"""Context observations for Gymnasium vector envs, and an adapter that lets SB3 train on a Gymnasium vector env.

:class:`VectorContextObservation` wraps a ``gym.make_vec(...)`` env (sync or async) whose autoreset mode is
``AutoresetMode.NEXT_STEP`` (Gymnasium's default): the step after a sub-env finished returns its reset observation
(and ignores its action), so the wrapper resets that stream row just before feeding it that frame — one batched
forward per step, no terminal-frame bookkeeping. ``SAME_STEP`` and ``DISABLED`` are rejected at construction.
With ``world_model=`` the observation of each sub-env is ``[c_t, belief_t]``: a batched ``VRNNFilter`` runs
beside the stream on its tokens, fed each sub-env's previous action; on a sub-env's reset step its filter row
restarts with the stream row and that (ignored) action is not used.

:class:`GymnasiumToSB3VecEnv` presents a Gymnasium vector env as an SB3 ``VecEnv`` (SAME_STEP semantics):
finished sub-envs are reset inside ``step_wait`` with ``reset(options={"reset_mask": dones})`` and their last
observation goes to ``infos[i]["terminal_observation"]``. Both orders work::

    venv = GymnasiumToSB3VecEnv(VectorContextObservation(gym.make_vec("aime_rl/Catch-v0", 8), model_dir))
    venv = VecContextObservation(GymnasiumToSB3VecEnv(gym.make_vec("aime_rl/Catch-v0", 8)), model_dir)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from .core import ContextAttributes, ContextCore, context_space
from .models import ModelOrDir, WorldModelOrDir
from .preprocessing import frame_source_from

__all__ = ["GymnasiumToSB3VecEnv", "VectorContextObservation", "autoreset_mode_of", "split_vector_infos"]


def autoreset_mode_of(env: gym.vector.VectorEnv) -> AutoresetMode | None:
    """The ``AutoresetMode`` in ``env.metadata["autoreset_mode"]`` (strings accepted), or None if absent."""
    mode = env.metadata.get("autoreset_mode")
    return None if mode is None else AutoresetMode(mode)


# -- the vector wrapper --------------------------------------------------------------------------------------------


class VectorContextObservation(gym.vector.VectorWrapper, ContextAttributes):
    """Observation of every sub-env = its causal context, float32 ``[num_envs, context_dim]``, one batched forward
    (``[num_envs, context_dim + belief_dim]`` with a world model).

    Args:
        env: a Gymnasium vector env in ``NEXT_STEP`` autoreset mode with uint8 image observations, or made with
            ``render_mode="rgb_array"`` (frames from ``env.render()``).
        model_or_dir: a ``CausalPerceiverIO`` or a checkpoint directory.
        window: frames the context attends to.
        device: where the model runs; observations are numpy on the CPU.
        timescale: the stream's timescale.
        world_model: a trained ``VRNN`` (on this perception model) or its checkpoint directory: observations
            become ``[c_t, belief_t]`` with the belief ``[h_{t-1}, z_t]`` of the VRNN filter run online (one
            batched step per env step on the stream's tokens, reset per episode, fed each sub-env's previous
            action; the action a NEXT_STEP reset step ignores is ignored by the filter too).

    ``reset(options={"reset_mask": mask})`` restarts only the masked rows; the other rows keep their context and
    their stream (and filter) state (the stream is forked, stepped, and their rows are restored from the fork).
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        model_or_dir: ModelOrDir,
        window: int | None = 16,
        device: str | torch.device = "cpu",
        timescale: str = "fast",
        world_model: WorldModelOrDir = None,
    ):
        super().__init__(env)
        mode = autoreset_mode_of(env)
        if mode is not AutoresetMode.NEXT_STEP:
            raise ValueError(
                f"VectorContextObservation supports autoreset_mode NEXT_STEP only, got {mode!r} "
                f"(env.metadata['autoreset_mode']); make the env with gym.make_vec(..., "
                "vector_kwargs={'autoreset_mode': gym.vector.AutoresetMode.NEXT_STEP})"
            )
        self._core = ContextCore(  # its stream and filter are made by a full reset()
            model_or_dir,
            self.num_envs,
            env.single_action_space,
            frame_source_from(env.single_observation_space, env.render_mode, f"vector env {env}"),
            window=window,
            device=device,
            timescale=timescale,
            world_model=world_model,
        )
        self.single_observation_space = context_space(self._core.observation_dim)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._last_contexts = np.zeros(
            (self.num_envs, *self.single_observation_space.shape), dtype=np.float32
        )

    def _frames(self, observations: np.ndarray) -> torch.Tensor:
        """Frames of all sub-envs, uint8 ``[num_envs, 3, h, w]``."""
        return self._core.frames(observations, lambda: np.stack(self.env.render()))

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all sub-envs (or those in ``options["reset_mask"]``) and their stream rows."""
        options = dict(options) if options is not None else None
        mask = None if options is None else options.get("reset_mask")
        observations, infos = self.env.reset(seed=seed, options=options)
        frames = self._frames(observations)
        if mask is None or bool(np.all(mask)):
            self._core.start()
            self._last_contexts = self._core.observe(frames)
            self._autoreset[:] = False
        else:
            self._reset_rows(np.asarray(mask, dtype=bool), frames)
        return self._last_contexts.copy(), infos

    def _reset_rows(self, mask: np.ndarray, frames: torch.Tensor) -> None:
        """Restart the masked rows on their reset frames; the other rows keep their state and context."""
        if self._core.stream is None:
            raise ValueError("reset with options['reset_mask'] needs a full reset() first")
        contexts = self._core.restart_rows(mask, frames)
        self._last_contexts[mask] = contexts[mask]
        self._autoreset[mask] = False

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all sub-envs; rows that autoreset this step restart their stream (and filter row) first.

        ``actions``: the batched actions ``[num_envs, ...]``; with a world model they are the filter's previous
        actions for the new frames, except in the autoreset rows (the env ignores them, so does the filter).
        """
        if self._core.stream is None:
            raise ValueError("call reset() before step()")
        filter_actions = self._core.filter_actions(actions)
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        frames = self._frames(observations)
        if self._autoreset.any():
            self._core.reset(self._autoreset)
        self._last_contexts = self._core.observe(frames, filter_actions)
        self._autoreset = np.logical_or(terminations, truncations)
        return self._last_contexts.copy(), rewards, terminations, truncations, infos


# -- Gymnasium vector env -> SB3 VecEnv ----------------------------------------------------------------------------


def split_vector_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vector infos (``{key: values [N], "_key": mask [N]}``, nested) → one dict per sub-env."""
    per_env: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(num_envs, dtype=bool))
        rows = split_vector_infos(values, num_envs) if isinstance(values, dict) else values
        for i in np.flatnonzero(mask):
            per_env[i][key] = rows[i]
    return per_env


def _row(observations: Any, i: int) -> Any:
    """Observation of sub-env ``i`` (a copy) from batched observations (array or dict of arrays)."""
    if isinstance(observations, dict):
        return {key: _row(value, i) for key, value in observations.items()}
    return np.array(observations[i], copy=True)


def _with_rows(observations: Any, replacement: Any, mask: np.ndarray) -> Any:
    """``observations`` with the rows where ``mask`` is True taken from ``replacement``."""
    if isinstance(observations, dict):
        return {key: _with_rows(value, replacement[key], mask) for key, value in observations.items()}
    merged = np.array(observations, copy=True)
    merged[mask] = replacement[mask]
    return merged


class GymnasiumToSB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium vector env (``gym.make_vec`` or a vector wrapper such as
    :class:`VectorContextObservation`), with SB3's SAME_STEP semantics.

    ``NEXT_STEP`` / ``DISABLED`` envs: finished sub-envs are reset at once with ``reset(options={"reset_mask":
    dones})``; ``SAME_STEP`` envs: the final observation comes from ``infos["final_obs"]``. In both cases the
    returned observation of a finished sub-env is its reset observation, and ``infos[i]`` holds
    ``terminal_observation`` and ``TimeLimit.truncated``. Infos are split per sub-env (``episode`` statistics of
    ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` become SB3's ``info["episode"]``).
    """

    def __init__(self, env: gym.vector.VectorEnv):
        self.env = env
        self.autoreset_mode = autoreset_mode_of(env) or AutoresetMode.NEXT_STEP
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self):
        """Reset all sub-envs with the seeds/options given by ``seed()`` / ``set_options()``."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        observations, infos = self.env.reset(seed=seeds, options=self._shared_options())
        self.reset_infos = split_vector_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return observations

    def _shared_options(self) -> dict[str, Any] | None:
        options = [o for o in self._options if o]
        if not options:
            return None
        if len(options) != self.num_envs or any(o != options[0] for o in options):
            raise ValueError("a Gymnasium vector env takes one reset options dict for all sub-envs")
        return dict(options[0])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, terminations, truncations, infos = self.env.step(self._actions)
        dones = np.logical_or(terminations, truncations)
        env_infos = split_vector_infos(infos, self.num_envs)
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            for i in np.flatnonzero(dones):
                env_infos[i].update(env_infos[i].pop("final_info", {}))
                env_infos[i]["terminal_observation"] = env_infos[i].pop("final_obs")
        elif dones.any():
            for i in np.flatnonzero(dones):
                env_infos[i]["terminal_observation"] = _row(observations, i)
            reset_observations, reset_infos = self.env.reset(options={"reset_mask": dones.copy()})
            observations = _with_rows(observations, reset_observations, dones)
            for i, info in enumerate(split_vector_infos(reset_infos, self.num_envs)):
                if dones[i]:
                    self.reset_infos[i] = info
        for i in range(self.num_envs):
            env_infos[i]["TimeLimit.truncated"] = bool(truncations[i] and not terminations[i])
        return observations, np.asarray(rewards, dtype=np.float32), dones, env_infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    # -- attribute access (through the base vector env) ----------------------------------------------------------

    def _sub_envs(self, indices: VecEnvIndices) -> list[gym.Env]:
        envs = getattr(self.env.unwrapped, "envs", None)
        if envs is None:
            raise NotImplementedError("per-env access needs a SyncVectorEnv (it has .envs)")
        return [envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        values = self.env.unwrapped.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        values = list(self.env.unwrapped.get_attr(attr_name))
        for i in self._get_indices(indices):
            values[i] = value
        self.env.unwrapped.set_attr(attr_name, values)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        selected = list(self._get_indices(indices))
        if selected == list(range(self.num_envs)):
            return list(self.env.unwrapped.call(method_name, *method_args, **method_kwargs))
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._sub_envs(selected)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        try:
            envs = self._sub_envs(indices)
        except NotImplementedError:
            return [False for _ in self._get_indices(indices)]
        return [is_wrapped(env, wrapper_class) for env in envs]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
