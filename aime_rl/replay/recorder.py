"""Record what an agent sees into a :class:`~aime_rl.replay.store.ReplayStore` while it runs.

* :class:`RecordFrames` wraps a gymnasium env; :class:`VecRecordFrames` wraps an SB3 ``VecEnv`` (one episode
  stream per sub-env, SB3's same-step autoreset handled through ``infos[i]["terminal_observation"]``).
* Frames are resized to the store's ``frame_shape`` with ``torch.nn.functional.interpolate(antialias=True)``
  (bilinear; no OpenCV) and stored with the step convention of :mod:`aime_rl.replay.store`.
* Observations, rewards and infos pass through unchanged, so wrappers above (e.g. a context-vector wrapper) see
  exactly what they would without the recorder, and the recorder stores raw frames.
* Recording that stops mid-episode (``reset()`` before the episode ended, ``close()``) commits the episode with
  ``truncated`` set on its last step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from aime_rl.replay.store import EpisodeWriter, ReplayStore
from aime_rl.utils.images import resize_uint8

FRAME_SOURCES = ("auto", "observation", "render")


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 frames ``[H, W, 3]`` or ``[N, H, W, 3]`` to ``size = (h, w)`` (bilinear, antialiased)."""
    frames = np.asarray(frames)
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [H, W, 3] or [N, H, W, 3], got {frames.dtype} {frames.shape}")
    if batch.shape[1:3] == tuple(size):
        resized = batch.copy()
    else:
        video = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        resized = resize_uint8(video, size).permute(0, 2, 3, 1).contiguous().numpy()
    return resized[0] if single else resized


def is_image_space(space: gym.Space) -> bool:
    """True for a ``Box`` of uint8 ``[H, W, 3]`` observations."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 3
    )


def _as_store(store: ReplayStore | str | os.PathLike, frame_shape: Sequence[int] | None, chunk_length: int):
    if isinstance(store, ReplayStore):
        return store
    return ReplayStore(store, frame_shape=frame_shape, chunk_length=chunk_length)


class RecordFrames(gym.Wrapper):
    """Gymnasium wrapper that stores frames, actions, rewards and flags of every episode in a ``ReplayStore``.

    Args:
        env: the environment.
        store: a writable :class:`ReplayStore` or a directory (a store is opened there with ``frame_shape`` and
            ``chunk_length``).
        frame_source: ``"observation"`` (the observation is a uint8 ``[H, W, 3]`` image), ``"render"``
            (``env.render()``, needs ``render_mode="rgb_array"``) or ``"auto"`` (observation if it is an image).
    """

    def __init__(
        self,
        env: gym.Env,
        store: ReplayStore | str | os.PathLike,
        frame_source: str = "auto",
        frame_shape: Sequence[int] | None = None,
        chunk_length: int = 1000,
    ):
        super().__init__(env)
        if frame_source not in FRAME_SOURCES:
            raise ValueError(f"frame_source must be one of {FRAME_SOURCES}, got {frame_source!r}")
        if frame_source == "auto":
            frame_source = "observation" if is_image_space(env.observation_space) else "render"
        if frame_source == "observation" and not is_image_space(env.observation_space):
            raise ValueError(
                f"frame_source='observation' needs uint8 [H, W, 3] observations, got {env.observation_space}"
            )
        if frame_source == "render" and env.render_mode != "rgb_array":
            raise ValueError(f"frame_source='render' needs render_mode='rgb_array', got {env.render_mode!r}")
        self.frame_source = frame_source
        self.store = _as_store(store, frame_shape, chunk_length)
        self.episode: EpisodeWriter | None = None
        self._pending_frame: np.ndarray | None = None

    def _frame(self, observation: Any) -> np.ndarray:
        frame = observation if self.frame_source == "observation" else self.env.render()
        return resize_frames(np.asarray(frame), self.store.frame_shape[:2])

    def reset(self, **kwargs: Any):
        observation, info = self.env.reset(**kwargs)
        self._stop_episode()
        self.episode = self.store.begin_episode()
        self._pending_frame = self._frame(observation)
        return observation, info

    def step(self, action: Any):
        if self.episode is None:
            raise RuntimeError("RecordFrames: call reset() before step()")
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.episode.add(self._pending_frame, action, reward, terminated, truncated)
        self._pending_frame = self._frame(observation)
        if terminated or truncated:
            self.episode.finish(self._pending_frame)
            self.episode = None
        return observation, reward, terminated, truncated, info

    def _stop_episode(self) -> None:
        """Commit an episode cut short by ``reset``/``close`` as truncated (drop it if it has no steps)."""
        if self.episode is not None:
            if self.episode.num_steps:
                self.episode.finish(self._pending_frame, mark_truncated=True)
            else:
                self.episode.abandon()
        self.episode = None

    def close(self) -> None:
        self._stop_episode()
        super().close()


class VecRecordFrames(VecEnvWrapper):
    """SB3 ``VecEnvWrapper`` that stores every sub-env's episodes in a ``ReplayStore``.

    Each sub-env has its own in-progress episode; episodes are committed whole (or in ``chunk_length`` chunks), so
    a store written by N sub-envs holds N interleaved but separate streams. With SB3's same-step autoreset, the
    observation returned on ``done`` already starts the next episode: the recorder finishes the old episode with
    ``infos[i]["terminal_observation"]`` and starts the new one with the returned frame. ``terminated`` is
    ``done and not infos[i]["TimeLimit.truncated"]``.

    Args:
        venv: the vec env; place the recorder *under* wrappers that change observations (e.g. before
            ``VecTransposeImage`` or a context wrapper) so it sees raw frames.
        store: a writable :class:`ReplayStore` or a directory.
        frame_source: ``"observation"`` (uint8 ``[N, H, W, 3]`` observations) or ``"render"``
            (``venv.get_images()``). The latter cannot see the terminal frame after autoreset, so its episodes are
            stored without the final-observation row (``Episode.has_final_observation`` is False).
    """

    def __init__(
        self,
        venv: VecEnv,
        store: ReplayStore | str | os.PathLike,
        frame_source: str = "observation",
        frame_shape: Sequence[int] | None = None,
        chunk_length: int = 1000,
    ):
        super().__init__(venv)
        if frame_source not in ("observation", "render"):
            raise ValueError(f"frame_source must be 'observation' or 'render', got {frame_source!r}")
        if frame_source == "observation" and not is_image_space(venv.observation_space):
            raise ValueError(
                "VecRecordFrames needs uint8 [H, W, 3] observations (put it below VecTransposeImage and other "
                f"observation wrappers) or frame_source='render'; got {venv.observation_space}"
            )
        self.frame_source = frame_source
        self.store = _as_store(store, frame_shape, chunk_length)
        self.episodes: list[EpisodeWriter | None] = [None] * self.num_envs
        self._pending_frames: list[np.ndarray | None] = [None] * self.num_envs
        self._actions: np.ndarray | None = None

    def _frames(self, observations: np.ndarray) -> np.ndarray:
        """uint8 ``[N, h, w, 3]`` at store resolution."""
        if self.frame_source == "render":
            observations = np.stack([np.asarray(image) for image in self.venv.get_images()])
        return resize_frames(np.asarray(observations), self.store.frame_shape[:2])

    def reset(self):
        observations = self.venv.reset()
        self._stop_episodes()
        frames = self._frames(observations)
        for i in range(self.num_envs):
            self.episodes[i] = self.store.begin_episode()
            self._pending_frames[i] = frames[i]
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.array(actions, copy=True)
        self.venv.step_async(actions)

    def step_wait(self):
        observations, rewards, dones, infos = self.venv.step_wait()
        if any(episode is None for episode in self.episodes):
            raise RuntimeError("VecRecordFrames: call reset() before step()")
        frames = self._frames(observations)
        terminal_frames = self._terminal_frames(dones, infos)
        for i in range(self.num_envs):
            truncated = bool(dones[i]) and bool(infos[i].get("TimeLimit.truncated", False))
            terminated = bool(dones[i]) and not truncated
            self.episodes[i].add(self._pending_frames[i], self._actions[i], rewards[i], terminated, truncated)
            if dones[i]:
                self.episodes[i].finish(terminal_frames.get(i))
                self.episodes[i] = self.store.begin_episode()
            self._pending_frames[i] = frames[i]
        return observations, rewards, dones, infos

    def _terminal_frames(self, dones: np.ndarray, infos: Sequence[dict]) -> dict[int, np.ndarray]:
        """Final frames of the episodes that ended this step, by sub-env (none with ``frame_source='render'``)."""
        done = [i for i in range(self.num_envs) if dones[i]]
        if not done or self.frame_source == "render":
            return {}
        missing = [i for i in done if "terminal_observation" not in infos[i]]
        if missing:
            raise ValueError(f"sub-envs {missing} are done but their infos have no 'terminal_observation'")
        terminal = np.stack([np.asarray(infos[i]["terminal_observation"]) for i in done])
        resized = resize_frames(terminal, self.store.frame_shape[:2])
        return dict(zip(done, resized, strict=True))

    def _stop_episodes(self) -> None:
        """Commit episodes cut short by ``reset``/``close`` as truncated (drop those without steps)."""
        for i, episode in enumerate(self.episodes):
            if episode is not None:
                if episode.num_steps:
                    episode.finish(self._pending_frames[i], mark_truncated=True)
                else:
                    episode.abandon()
            self.episodes[i] = None

    def close(self) -> None:
        self._stop_episodes()
        self.venv.close()
