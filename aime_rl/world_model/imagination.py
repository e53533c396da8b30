"""Imagination with a trained :class:`~aime_rl.world_model.vrnn.VRNN`: prior rollouts, open-loop video, PSNR.

- :func:`imagine`: roll the prior forward from a state, with given actions or a policy, batched (no frames needed:
  the context of each imagined step is the VRNN's context head output).
- :func:`open_loop_rollout`: observe ``k`` real frames, then predict ``H`` frames with the real actions and decode
  them with the tokenizer (DreamerV3's open-loop video).
- :func:`psnr_per_step`, :func:`copy_last_psnr`: the score and its "repeat the last observed frame" baseline
  (both :func:`aime_rl.utils.metrics.psnr_per_step`, the PSNR the perception trainer uses too).
- :func:`log_open_loop`: a labelled TensorBoard GIF ``{prefix}/open_loop`` (rows truth / model / |error|) and the
  scalars ``{prefix}/psnr/step_k`` and ``{prefix}/copy_last_psnr/step_k`` (``k = 1 … H``) with their means, the
  tag scheme of :mod:`aime_rl.utils.tensorboard`.
- :class:`WorldModelRolloutCallback`: an SB3 callback that logs such a rollout from a replay store periodically,
  on the schedule of the perception model's rollout callback (:mod:`aime_rl.utils.schedule`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter

from ..replay.store import ReplayStore
from ..utils import metrics
from ..utils.schedule import is_due, renamed_keywords
from ..utils.tensorboard import ROLLOUT_PREFIX, add_rollout_gif, add_rollout_psnr, find_tensorboard_writer
from ..utils.validation import as_float_video, check_positive
from .vrnn import VRNN, StepState

logger = logging.getLogger(__name__)

__all__ = [
    "WorldModelRolloutCallback",
    "copy_last_psnr",
    "imagine",
    "log_open_loop",
    "open_loop_rollout",
    "psnr_per_step",
]

Policy = Callable[[StepState], torch.Tensor]


@torch.no_grad()
def imagine(
    vrnn: VRNN,
    start: StepState,
    horizon: int,
    actions: torch.Tensor | None = None,
    policy: Policy | None = None,
    sample: bool = True,
    predict_tokens: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Roll the prior ``horizon`` steps forward from ``start`` (the state of step t).

    Step i applies action ``a_{t+i}`` — ``actions[:, i]`` (``[B, horizon]`` ids or ``[B, horizon, A]``) or
    ``policy(state)`` — then imagines step ``t+i+1``: ``h = LSTM(z, c, a)``, reward and continuation from ``h``,
    ``z ~ p(z | h, c)``, ``ĉ = g(h, z)``.

    Returns a dict: ``belief [B, horizon, H + Z]``, ``context [B, horizon, D]`` (imagined steps t+1 … t+horizon),
    ``reward`` and ``continue_probability`` ``[B, horizon]`` (of each transition), ``actions`` (encoded,
    ``[B, horizon, A]``), ``last`` (:class:`StepState`), and with ``predict_tokens`` the argmax ``tokens``
    ``[B, horizon, h, w, G]``.
    """
    if (actions is None) == (policy is None):
        raise ValueError("give exactly one of actions ([B, horizon, ...]) or policy (state -> actions)")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    batch = start.z.shape[0]
    encoded_actions = None
    if actions is not None:
        if actions.shape[:2] != (batch, horizon):
            raise ValueError(
                f"actions must have leading dims [B={batch}, horizon={horizon}], got {tuple(actions.shape)}"
            )
        encoded_actions = vrnn.encode_actions(actions, (batch, horizon))
    keys = ("belief", "context", "reward", "continue_probability", "actions")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys + ("tokens",)}
    state = start
    for i in range(horizon):
        if encoded_actions is not None:
            action = encoded_actions[:, i]
        else:
            action = vrnn.encode_actions(policy(state), (batch,))
        carry = vrnn.transition(state, action)
        out["reward"].append(vrnn.predict_reward(carry.h))
        out["continue_probability"].append(vrnn.predict_continue(carry.h))
        state = vrnn.prior_step(carry, sample=sample, generator=generator)
        out["belief"].append(state.belief)
        out["context"].append(state.context)
        out["actions"].append(action)
        if predict_tokens:
            out["tokens"].append(vrnn.predict_tokens(state.belief).argmax(-1))
    result: dict[str, Any] = {k: torch.stack(v, 1) for k, v in out.items() if v}
    result["last"] = state
    return result


@torch.no_grad()
def open_loop_rollout(
    vrnn: VRNN,
    frames: torch.Tensor,
    actions: torch.Tensor,
    observe_k: int,
    horizon: int,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Observe frames ``0 … k-1``, then predict frames ``k … k+H-1`` open loop with the real actions.

    Args:
        frames: ``[B, T, 3, H, W]`` with ``T >= k`` (only the first ``k`` are used).
        actions: ``[B, T_a]`` ids or ``[B, T_a, A]`` with ``T_a >= k + H - 1`` (``a_t`` follows ``x_t``).
        sample: sample the prior (``False``: the mean of its most likely component, and the posterior mean).

    Returns a dict: ``predicted`` ``[B, H, 3, H_img, W_img]`` (the predicted frames, float in [0, 1]),
    ``predicted_tokens`` ``[B, H, h, w, G]``, ``model_frames`` ``[B, k + H, 3, H_img, W_img]`` (the observed
    frames' tokens then the predicted ones, decoded together by the causal tokenizer decoder, so the first ``k``
    are the tokenizer's reconstructions), ``reward``/``continue_probability`` ``[B, H - 1]`` of the imagined
    transitions.
    """
    frames = as_float_video(frames, "frames", channels=3)
    if not 1 <= observe_k <= frames.shape[1]:
        raise ValueError(f"observe_k must be in [1, T={frames.shape[1]}], got {observe_k}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if actions.shape[0] != frames.shape[0] or actions.shape[1] < observe_k + horizon - 1:
        raise ValueError(
            f"actions must have shape [B={frames.shape[0]}, T >= observe_k + horizon - 1 = "
            f"{observe_k + horizon - 1}, ...], got {tuple(actions.shape)}"
        )
    observed = vrnn.observe(frames[:, :observe_k], actions[:, :observe_k], sample=sample, generator=generator)
    first = vrnn.prior_step(observed["carry"], sample=sample, generator=generator)
    tokens = [vrnn.predict_tokens(first.belief).argmax(-1)]
    result: dict[str, torch.Tensor] = {}
    if horizon > 1:
        rest = imagine(
            vrnn,
            first,
            horizon - 1,
            actions=actions[:, observe_k : observe_k + horizon - 1],
            sample=sample,
            predict_tokens=True,
            generator=generator,
        )
        tokens.append(rest["tokens"])
        result.update(reward=rest["reward"], continue_probability=rest["continue_probability"])
    predicted_tokens = torch.cat([tokens[0].unsqueeze(1), *tokens[1:]], 1)
    model_frames = vrnn.decode_tokens(torch.cat([observed["tokens"], predicted_tokens], 1))
    result.update(
        predicted=model_frames[:, observe_k:], predicted_tokens=predicted_tokens, model_frames=model_frames
    )
    return result


def psnr_per_step(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per time step, averaged over the batch: ``[B, T, 3, H, W]`` × 2 → ``[T]``.

    ``PSNR = 10 log10(1 / MSE)`` per frame (pixels in [0, 1]; uint8 is converted; ``pred`` is clipped to
    [0, 1]), MSE floored at 1e-10: :func:`aime_rl.utils.metrics.psnr_per_step`.
    """
    truth = as_float_video(truth, "truth").float()
    pred = as_float_video(pred, "pred").float().to(truth.device)
    if truth.shape != pred.shape:
        raise ValueError(
            f"truth and pred must have the same shape, got {tuple(truth.shape)} and {tuple(pred.shape)}"
        )
    return metrics.psnr_per_step(pred, truth)


def copy_last_psnr(frames: torch.Tensor, observe_k: int, horizon: int) -> torch.Tensor:
    """PSNR ``[H]`` of the baseline that repeats the last observed frame ``x_{k-1}`` for steps ``k … k+H-1``."""
    frames = as_float_video(frames, "frames")
    if observe_k < 1 or frames.shape[1] < observe_k + horizon:
        raise ValueError(
            f"frames must have T >= observe_k + horizon = {observe_k + horizon} (observe_k >= 1), "
            f"got shape {tuple(frames.shape)} and observe_k={observe_k}"
        )
    truth = frames[:, observe_k : observe_k + horizon]
    return psnr_per_step(truth, frames[:, observe_k - 1 : observe_k].expand_as(truth))


@torch.no_grad()
def log_open_loop(
    writer: SummaryWriter | None,
    vrnn: VRNN,
    frames: torch.Tensor,
    actions: torch.Tensor,
    observe_k: int,
    horizon: int,
    global_step: int,
    tag: str = ROLLOUT_PREFIX,
    max_videos: int = 4,
) -> dict[str, float]:
    """Open-loop rollout on real sequences; write a GIF and PSNR scalars; return the numbers.

    ``frames`` ``[B, T >= k + H, 3, H, W]`` and ``actions`` ``[B, T, ...]`` (e.g. a replay window). ``tag`` is the
    prefix of the tag scheme (:mod:`aime_rl.utils.tensorboard`). Writes (when ``writer`` is given)
    ``{tag}/open_loop`` (a labelled GIF, rows truth / model / |error| of the first ``max_videos`` sequences, green
    borders on the ``k`` observed steps, red on the imagined ones) with its ``{tag}/open_loop/description``, and
    the scalars ``{tag}/psnr/step_j`` and ``{tag}/copy_last_psnr/step_j`` (``j = 1 … H``: 1-based imagined steps)
    and ``{tag}/psnr/mean`` / ``{tag}/copy_last_psnr/mean``. Returns the same scalars (keys without ``tag/``,
    e.g. ``"psnr/step_1"``, ``"psnr/mean"``).
    """
    was_training = vrnn.training
    vrnn.eval()
    try:
        frames = as_float_video(frames, "frames", channels=3)
        rollout = open_loop_rollout(vrnn, frames, actions, observe_k, horizon)
    finally:
        vrnn.train(was_training)
    truth = frames[:, : observe_k + horizon].to(rollout["predicted"].device)
    model_psnr = psnr_per_step(truth[:, observe_k:], rollout["predicted"])
    baseline = copy_last_psnr(truth, observe_k, horizon)
    if writer is not None:
        videos = slice(0, max_videos)
        add_rollout_gif(
            writer,
            f"{tag}/open_loop",
            truth[videos],
            rollout["model_frames"][videos],
            observe_k,
            global_step,
        )
    return add_rollout_psnr(writer, tag, model_psnr, baseline, global_step)


class WorldModelRolloutCallback(BaseCallback):
    """SB3 callback: every ``every_n_steps`` env steps, log an open-loop rollout of ``vrnn`` on replay windows.

    The schedule is the one of the perception model's :class:`~aime_rl.agents.RolloutVideoCallback`
    (:func:`aime_rl.utils.schedule.is_due`): a rollout is due once ``every_n_steps`` env steps have passed since the
    last rollout logged. A skipped rollout (no replay episode long enough yet) is retried at the next step, not a
    full interval later, and warned about once per wait.

    Args:
        vrnn: the world model (evaluated under ``no_grad``; its mode is restored afterwards).
        store: a :class:`ReplayStore` or its directory (opened read-only; refreshed before each sample, so it can
            be the store a recorder is filling during training).
        every_n_steps: interval in environment steps (``model.num_timesteps``).
        batch_size: sequences per rollout (all go into the PSNR; at most ``num_videos`` into the GIF).
        observe_k, horizon: observed and predicted frames.
        tag: TensorBoard prefix (:func:`log_open_loop`): ``world_model/open_loop`` (GIF),
            ``world_model/psnr/step_k``, ``world_model/copy_last_psnr/step_k`` … by default, apart from the
            ``rollout/`` tags of the perception model's rollout callback in the same run.
        writer: a ``SummaryWriter``; default: the one of the model's TensorBoard logger (``tensorboard_log=``,
            :func:`~aime_rl.utils.tensorboard.find_tensorboard_writer`). Without either, only SB3 logger scalars
            (``{tag}/psnr/mean``, ``{tag}/copy_last_psnr/mean``) are recorded.
        seed: seeds the window sampling (``default_rng([seed, call index])``).
        num_videos: sequences shown in the GIF (the first ``num_videos`` of the batch). ``max_videos=`` is its
            deprecated spelling.
    """

    @renamed_keywords(max_videos="num_videos")
    def __init__(
        self,
        vrnn: VRNN,
        store: ReplayStore | str | os.PathLike,
        every_n_steps: int = 10_000,
        batch_size: int = 4,
        observe_k: int = 5,
        horizon: int = 10,
        tag: str = "world_model",
        writer: SummaryWriter | None = None,
        seed: int = 0,
        num_videos: int = 4,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        check_positive(dict(every_n_steps=every_n_steps, num_videos=num_videos), "WorldModelRolloutCallback")
        self.vrnn = vrnn
        self.store = store if isinstance(store, ReplayStore) else ReplayStore.open(store)
        self.every_n_steps = every_n_steps
        self.batch_size, self.observe_k, self.horizon = batch_size, observe_k, horizon
        self.tag, self.writer, self.seed, self.num_videos = tag, writer, seed, num_videos
        self.num_logged = 0
        self._last_logged_step = 0
        self._skip_warned = False
        self.last_scalars: dict[str, float] = {}

    @property
    def max_videos(self) -> int:
        """Deprecated spelling of :attr:`num_videos`."""
        warnings.warn(
            "WorldModelRolloutCallback.max_videos is deprecated, use num_videos instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.num_videos

    def _tensorboard_writer(self) -> SummaryWriter | None:
        if self.writer is not None:
            return self.writer
        return find_tensorboard_writer(getattr(self, "logger", None))

    def _on_step(self) -> bool:
        if is_due(self.num_timesteps, self._last_logged_step, self.every_n_steps):
            self.log_rollout()
        return True

    def log_rollout(self) -> dict[str, float]:
        """Sample windows and log one rollout now, at step ``num_timesteps`` (the step the next interval counts
        from); returns the scalars (empty when no episode is long enough: the rollout is skipped, with a warning the
        first time since the last rollout logged)."""
        length = self.observe_k + self.horizon
        self.store.refresh()
        if not any(len(e) >= length for e in self.store.episodes):
            if not self._skip_warned:
                logger.warning("no replay episode has %d rows yet; open-loop rollout skipped", length)
                self._skip_warned = True
            return {}
        rng = np.random.default_rng([self.seed, self.num_logged])
        batch = self.store.sample_windows(self.batch_size, length, rng)
        device = self.vrnn.device
        scalars = log_open_loop(
            self._tensorboard_writer(),
            self.vrnn,
            batch["frames"].to(device),
            batch["actions"].to(device),
            self.observe_k,
            self.horizon,
            self.num_timesteps,
            tag=self.tag,
            max_videos=self.num_videos,
        )
        sb3_logger = getattr(self, "logger", None)  # set by init_callback (absent when called stand-alone)
        if sb3_logger is not None:
            for name in ("psnr/mean", "copy_last_psnr/mean"):
                sb3_logger.record(f"{self.tag}/{name}", scalars[name])
        self.num_logged += 1
        self._last_logged_step = self.num_timesteps
        self._skip_warned = False
        self.last_scalars = scalars
        return scalars
