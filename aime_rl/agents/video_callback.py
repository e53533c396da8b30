"""Log open-loop rollout videos of the perception model to TensorBoard: :class:`RolloutVideoCallback`.

The callback is read-only. It finds what it needs in the agent's training env when it is not given explicitly
(:mod:`aime_rl.agents.lookup`): the model of the :class:`~aime_rl.wrappers.VecContextObservation` that computes
the observations and the replay store of the :class:`~aime_rl.replay.VecRecordFrames` under it::

    recorder = VecRecordFrames(venv, "run/replay", frame_shape=(64, 64, 3))
    env = VecContextObservation(recorder, "run/model", window=16)
    agent = make_agent("ppo", env, tensorboard_log="run/tb")
    agent.learn(1_000_000, callback=[RolloutVideoCallback(every_n_steps=50_000)])

Its schedule (``every_n_steps``, :func:`~aime_rl.utils.schedule.is_due`; a skipped video is retried at the next
step), its video count (``num_videos``) and its writer lookup
(:func:`~aime_rl.utils.tensorboard.find_tensorboard_writer`) are those of the world model's rollout callback
(:class:`~aime_rl.world_model.WorldModelRolloutCallback`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter

from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay.store import ReplayStore
from aime_rl.utils.metrics import psnr_per_step
from aime_rl.utils.schedule import is_due, renamed_keywords
from aime_rl.utils.tensorboard import add_rollout_gif, add_rollout_psnr, find_tensorboard_writer
from aime_rl.utils.validation import check_positive
from aime_rl.wrappers.preprocessing import load_perception_model

from .lookup import StoreLike, find_context_envs, find_replay_store
from .sampling import device_of, has_windows, isolated_rng, sample_frames

__all__ = ["RolloutVideoCallback"]


class RolloutVideoCallback(BaseCallback):
    """Every ``every_n_steps`` env steps, log an open-loop rollout of the perception model on recorded frames.

    Samples ``num_videos`` windows of ``context_frames + horizon`` frames from the replay store (a fixed random
    stream, so successive videos show different windows), lets the model see the first ``context_frames`` and
    generate the rest (``predictor.generate``), and writes to TensorBoard:

    - ``<tag>``: an animated GIF, one column per window, rows truth / model (reconstructed context, then
      generated frames) / |error|; green borders mark context steps, red borders generated ones;
    - ``<prefix>/psnr/step_<k>`` and ``<prefix>/copy_last_psnr/step_<k>`` (k from 1; ``<prefix>`` is ``tag`` without
      its last part, ``rollout`` by default): PSNR (dB) of the k-th generated frame, and of repeating the last
      observed frame, against the truth; ``/mean`` of each (the tag scheme of :mod:`aime_rl.utils.tensorboard`).

    The writer is the SummaryWriter of SB3's TensorBoard output (the agent's ``tensorboard_log`` run directory) when
    the agent logs to TensorBoard (:func:`~aime_rl.utils.tensorboard.find_tensorboard_writer`), else a writer of its
    own on ``logdir``. Generation runs in eval mode without gradients, with torch's global RNG seeded and then
    restored (the agent's random stream is unaffected).

    Args:
        every_n_steps: env steps (summed over sub-envs) between videos (:func:`~aime_rl.utils.schedule.is_due`).
            A skipped video (no replay episode long enough yet) is retried at the next step, not a full interval
            later; the next interval counts from the step of the last video logged. ``every=`` is its deprecated
            spelling.
        model: a ``CausalPerceiverIO`` or a checkpoint directory (default: the model of the
            ``VecContextObservation`` in the training env, so joint training shows up in the videos).
        store: replay store or directory (default: the ``VecRecordFrames`` in the training env).
        num_videos: windows per video (columns).
        context_frames, horizon: observed and generated frames (default: half of the model's ``video_shape[0]``
            each); ``horizon`` must be a multiple of the tokenizer's temporal factor.
        tag: summary tag of the GIF (scalars go under ``<tag>/``).
        logdir: where to write when SB3 does not log to TensorBoard.
        method, temperature: passed to ``generate``.
        fps: GIF playback rate.
        seed: window sampling and generation seed.
    """

    @renamed_keywords(every="every_n_steps")
    def __init__(
        self,
        every_n_steps: int = 10_000,
        model: CausalPerceiverIO | str | os.PathLike | None = None,
        store: StoreLike | None = None,
        num_videos: int = 4,
        context_frames: int | None = None,
        horizon: int | None = None,
        tag: str = "rollout/open_loop",
        logdir: str | os.PathLike | None = None,
        method: str = "maskgit",
        temperature: float = 0.5,
        fps: float = 4,
        seed: int = 0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        check_positive(dict(every_n_steps=every_n_steps, num_videos=num_videos), "RolloutVideoCallback")
        self.every_n_steps = int(every_n_steps)
        self.num_videos = int(num_videos)
        self.context_frames = context_frames
        self.horizon = horizon
        self.tag = tag
        self.logdir = logdir
        self.method = method
        self.temperature = temperature
        self.fps = fps
        self.seed = int(seed)
        self._model_arg = model
        self._store_arg = store
        self.perception: CausalPerceiverIO | None = None
        self.store: ReplayStore | None = None
        self.writer: SummaryWriter | None = None
        self._own_writer = False
        self._rng = np.random.default_rng(seed)
        self.num_videos_logged = 0
        self._last_video_step = 0

    @property
    def every(self) -> int:
        """Deprecated spelling of :attr:`every_n_steps`."""
        warnings.warn(
            "RolloutVideoCallback.every is deprecated, use every_n_steps instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.every_n_steps

    # -- setup ---------------------------------------------------------------------------------------------------

    def _init_callback(self) -> None:
        if self._model_arg is not None:
            self.perception = load_perception_model(self._model_arg)
        else:
            self.perception = find_context_envs(self.training_env)[0].model
        self.store = find_replay_store(self.training_env, self._store_arg)
        half = max(int(self.perception.config.video_shape[0]) // 2, 1)
        self.context_frames = self.context_frames or half
        self.horizon = self.horizon or half
        self._check_horizon()
        self.writer = self._find_writer()
        self._last_video_step = self.model.num_timesteps

    def _check_horizon(self) -> None:
        step = self.perception.predictor.frames_per_token_step
        if self.context_frames % step or self.horizon % step or self.horizon < 1:
            raise ValueError(
                f"context_frames={self.context_frames} and horizon={self.horizon} must be positive multiples of {step}"
            )

    def _find_writer(self) -> SummaryWriter:
        """SB3's TensorBoard writer when the logger has one, else an own writer on ``logdir``."""
        writer = find_tensorboard_writer(self.logger)
        if writer is not None:
            return writer
        if self.logdir is None:
            raise ValueError(
                "RolloutVideoCallback needs TensorBoard: give the agent tensorboard_log=... or the callback logdir=..."
            )
        self._own_writer = True
        return SummaryWriter(log_dir=os.fspath(self.logdir))

    # -- SB3 hooks -----------------------------------------------------------------------------------------------

    def _on_step(self) -> bool:
        if is_due(self.num_timesteps, self._last_video_step, self.every_n_steps):
            self.log_rollout()
        return True

    def _on_training_end(self) -> None:
        if self._own_writer and self.writer is not None:
            self.writer.close()

    # -- one video -----------------------------------------------------------------------------------------------

    def log_rollout(self) -> bool:
        """Write one video and its PSNR scalars at step ``num_timesteps``; False when no episode is long enough."""
        if self.perception is None:
            raise RuntimeError("the callback is not initialised: pass it to agent.learn(callback=...) first")
        length = self.context_frames + self.horizon
        if not has_windows(self.store, length):
            return False
        model = self.perception
        device = device_of(model)
        video = sample_frames(self.store, self.num_videos, length, self._rng, None, model.frame_size, device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), isolated_rng(self.seed + self.num_videos_logged, device):
                model_video = self._open_loop(model, video)
        finally:
            model.train(was_training)
        self._write(video, model_video)
        self.num_videos_logged += 1
        self._last_video_step = self.num_timesteps
        return True

    def _open_loop(self, model: CausalPerceiverIO, video: torch.Tensor) -> torch.Tensor:
        """Reconstructed context frames followed by the generated ones, ``[B, T, 3, H, W]``."""
        context = video[:, : self.context_frames]
        generated = model.generate(context, self.horizon, method=self.method, temperature=self.temperature)
        reconstructed = model.decode(model.encode(context)[0])
        return torch.cat([reconstructed, generated["frames"]], dim=1)

    def _write(self, video: torch.Tensor, model_video: torch.Tensor) -> None:
        step = self.num_timesteps
        add_rollout_gif(
            self.writer, self.tag, video.cpu(), model_video.cpu(), self.context_frames, step, fps=self.fps
        )
        c = self.context_frames
        truth = video[:, c:]
        copy_last = video[:, c - 1 : c].expand_as(truth)
        prefix = self.tag.rsplit("/", 1)[0] if "/" in self.tag else self.tag
        add_rollout_psnr(
            self.writer,
            prefix,
            psnr_per_step(model_video[:, c:], truth),
            psnr_per_step(copy_last, truth),
            step,
        )
        self.writer.flush()
