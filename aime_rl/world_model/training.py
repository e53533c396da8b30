"""Train a :class:`~aime_rl.world_model.vrnn.VRNN` on a replay store with the shared :class:`Trainer`.

``train_world_model(store_dir, perceiver, config, logdir)`` samples windows of ``config.sequence_length`` rows
from the training episodes (:class:`ReplayWindowDataset`, exact resume), minimises :func:`world_model_loss`, and every
``config.eval_every`` steps runs an open-loop rollout on held-out episodes: the TensorBoard GIF ``rollout/open_loop``
and the scalars ``rollout/psnr/step_k`` next to the copy-last-frame baseline ``rollout/copy_last_psnr/step_k``
(``k = 1 … horizon``), the same tags as the perception trainer's (see :mod:`aime_rl.utils.tensorboard`). The frozen
perceiver is not trained and not checkpointed; the final VRNN is written to ``logdir/world_model``
(:meth:`VRNN.save_pretrained`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from ..replay.dataset import ReplayWindowDataset
from ..replay.store import ReplayStore
from ..training.checkpoint import CONFIG_NAME, CheckpointManager
from ..training.trainer import Trainer, TrainerConfig
from ..utils.io import read_json
from ..utils.tensorboard import ROLLOUT_PREFIX
from .imagination import log_open_loop
from .vrnn import VRNN

logger = logging.getLogger(__name__)

__all__ = ["OpenLoopEvaluator", "infer_action_spec", "train_world_model", "world_model_loss"]

FINAL_MODEL_DIR = "world_model"


def world_model_loss(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``Trainer`` loss: the VRNN's losses on a replay batch (``frames``, ``actions``, ``rewards``, ``terminated``,
    ``is_last``; see :meth:`VRNN.forward`). Calls ``model(...)`` so DDP wrappers average the gradients. The
    per-step ``states`` are dropped (only scalars are logged)."""
    out = model(
        batch["frames"],
        batch["actions"],
        batch.get("rewards"),
        batch.get("terminated"),
        is_last=batch.get("is_last"),
    )
    out.pop("states", None)
    return out


def infer_action_spec(store: ReplayStore) -> tuple[int, bool]:
    """``(action_dim, discrete)`` from a store: integer scalar actions → ``(max id + 1, True)`` (a lower bound of
    the real ``n``: pass ``action_dim`` explicitly when some actions never occur); float actions → ``(size, False)``."""
    if store.action_shape is None or not store.episodes:
        raise ValueError(
            f"replay store {store.directory} holds no actions; pass action_dim and discrete explicitly"
        )
    if np.dtype(store.action_dtype).kind == "f":
        return int(np.prod(store.action_shape, dtype=np.int64)), False
    if store.action_shape not in ((), (1,)):
        raise ValueError(
            f"integer actions of shape {store.action_shape} are not supported (expected scalar ids)"
        )
    largest = max(int(np.max(e.actions)) for e in store.episodes if len(e))
    logger.warning(
        "action_dim not given: inferred Discrete(%d) from the largest stored action id; pass vrnn_kwargs="
        "{'action_dim': n} if the env has more actions",
        largest + 1,
    )
    return largest + 1, True


class OpenLoopEvaluator:
    """``eval_fn`` for :class:`Trainer`: an open-loop rollout on a fixed batch of held-out windows.

    The batch is sampled once (``default_rng([seed, "eval"])``) from the ``holdout`` episodes of the split used
    for training, or from all episodes when the split holds none long enough (a warning says so). Logs the
    ``rollout/`` tags of :mod:`aime_rl.utils.tensorboard` (see :func:`log_open_loop`) and returns the scalars
    (``{"psnr/step_1": …, "copy_last_psnr/step_1": …, "psnr/mean": …, …}``).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        observe_k: int,
        horizon: int,
        batch_size: int = 4,
        holdout_fraction: float = 0.1,
        seed: int = 0,
    ):
        self.store_dir = os.fspath(store_dir)
        self.observe_k, self.horizon, self.batch_size = observe_k, horizon, batch_size
        self.holdout_fraction, self.seed = holdout_fraction, seed
        self._batch: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def batch(self) -> dict[str, torch.Tensor] | None:
        """The fixed evaluation batch (None when no episode holds ``observe_k + horizon`` rows)."""
        if self._batch is None:
            self._batch = self._sample()
        return self._batch

    def _sample(self) -> dict[str, torch.Tensor] | None:
        length = self.observe_k + self.horizon
        source = ReplayWindowDataset(
            self.store_dir, self.batch_size, length, subset="holdout", holdout_fraction=self.holdout_fraction
        )
        rng = np.random.default_rng([self.seed, 1])
        try:
            return source.store.sample_windows(self.batch_size, length, rng, episode_ids=source.episode_ids())
        except ValueError:
            logger.warning(
                "the held-out split (holdout_fraction=%g) has no episode with %d rows: open-loop eval samples "
                "all episodes, training ones included",
                self.holdout_fraction,
                length,
            )
        try:
            return source.store.sample_windows(self.batch_size, length, rng)
        except ValueError:
            logger.warning("no replay episode has %d rows: open-loop eval skipped", length)
            return None

    def __call__(self, model: nn.Module, step: int, writer: SummaryWriter | None) -> dict[str, float]:
        batch = self.batch()
        if batch is None:
            return {}
        device = model.device
        scalars = log_open_loop(
            writer,
            model,
            batch["frames"].to(device),
            batch["actions"].to(device),
            self.observe_k,
            self.horizon,
            step,
            tag=ROLLOUT_PREFIX,
        )
        self.history.append((step, scalars))
        return scalars


def trained_vrnn_settings(logdir: str | os.PathLike) -> dict[str, Any]:
    """The ``VRNN`` arguments (``action_dim``, ``discrete``, …) the newest checkpoint under ``logdir/checkpoints``
    was trained with (its ``config.json["model"]``), or ``{}`` without a checkpoint."""
    latest = CheckpointManager(Path(logdir) / "checkpoints").latest_path()
    if latest is None:
        return {}
    settings = dict(read_json(latest / CONFIG_NAME).get("model") or {})
    return settings if settings.pop("class", None) == "VRNN" else {}


def train_world_model(
    store_dir: str | os.PathLike,
    perceiver: nn.Module,
    config: TrainerConfig,
    logdir: str | os.PathLike,
    vrnn_kwargs: Mapping[str, Any] | None = None,
    *,
    observe_k: int | None = None,
    horizon: int | None = None,
    eval_batch_size: int = 4,
    progress: bool | None = None,
) -> VRNN:
    """Train a VRNN on ``store_dir`` with a frozen ``perceiver``; returns it (also saved to ``logdir/world_model``).

    The VRNN's initial weights are drawn after ``torch.manual_seed(config.seed)``, whatever the caller's RNG
    state. The returned model's ``eval_history`` attribute lists ``(step, scalars)`` of every open-loop evaluation.

    Args:
        store_dir: replay store (frames at the perceiver's resolution).
        perceiver: a trained :class:`~aime_rl.perception.CausalPerceiverIO` (frozen; moved to ``config.device``).
        config: :class:`TrainerConfig` (``batch_size`` windows of ``sequence_length`` rows per step, ...).
        logdir: TensorBoard events, checkpoints (``logdir/checkpoints``, resumed automatically) and the final model.
        vrnn_kwargs: ``VRNN`` arguments (``action_dim``, ``discrete``, ``hidden_dim``, ...); the action spec is
            inferred from the store when missing (:func:`infer_action_spec`). A resume starts from the settings
            the newest checkpoint was trained with (:func:`trained_vrnn_settings`), ``vrnn_kwargs`` laid on top,
            so a run resumes the model it trained even when the ``VRNN`` defaults have changed since.
        observe_k, horizon: open-loop eval split (default: half of ``sequence_length`` each).
        eval_batch_size: held-out sequences per evaluation.
        progress: tqdm bar (``None``: when stderr is a terminal).
    """
    kwargs = {**trained_vrnn_settings(logdir), **dict(vrnn_kwargs or {})}
    if "action_dim" not in kwargs:
        kwargs["action_dim"], inferred_discrete = infer_action_spec(ReplayStore.open(store_dir))
        kwargs.setdefault("discrete", inferred_discrete)
    torch.manual_seed(config.seed)  # the initial weights follow config.seed, not the caller's RNG state
    vrnn = VRNN(perceiver, **kwargs)
    observe_k = observe_k if observe_k is not None else max(1, config.sequence_length // 2)
    horizon = horizon if horizon is not None else max(1, config.sequence_length - observe_k)
    evaluator = OpenLoopEvaluator(
        store_dir, observe_k, horizon, eval_batch_size, config.holdout_fraction, config.seed
    )
    trainer = Trainer(
        vrnn,
        world_model_loss,
        config,
        logdir,
        ReplayWindowDataset.from_config(store_dir, config),
        eval_fn=evaluator,
        progress=progress,
    )
    trainer.fit()
    if trainer.is_main:
        vrnn.save_pretrained(Path(logdir) / FINAL_MODEL_DIR)
    vrnn.eval_history = evaluator.history  # [(step, open-loop scalars)], for callers that want the numbers
    return vrnn
