"""A small training loop shared by the tokenizer, context-model and world-model trainers.

What :class:`Trainer` does each step: take the batch of that step, run ``loss_fn(model, batch)`` (bf16 autocast on
CUDA), back-propagate ``"total"``, clip the gradient norm, and take an AdamW step with a linear warm-up + cosine
decay schedule — unless the loss or the gradient norm is NaN/inf, in which case the step is skipped (gradients
dropped, parameters and schedule untouched) and counted. Around that: TensorBoard scalars, a tqdm bar, periodic
``eval_fn`` calls and checkpoints, and exact resume.

Exact resume
------------
``fit()`` first restores the newest checkpoint in ``logdir/checkpoints`` (weights, optimizer, scheduler, RNG states,
step and counters). The data stream resumes too because the trainer owns the data randomness. The usual source is a
:class:`~aime_rl.replay.dataset.ReplayWindowDataset`: the trainer takes its shard for ``(config.seed, rank,
world_size)`` (:meth:`~aime_rl.replay.dataset.ReplayWindowDataset.shard`) and iterates its batches from the resumed
step on (in-process or with ``num_workers`` DataLoader workers). Its item ``s`` depends on nothing but ``(seed, s,
rank)`` and the store's contents, so restarting at ``s`` needs no saved sampler state. Any *batch factory*
``make_batches(seed, rank, start_step)`` whose k-th item is the batch of step ``start_step + k`` resumes the same
way. A run of N steps and a run stopped after K steps and resumed to N therefore end with identical parameters
(on CPU; CUDA kernels may be non-deterministic). A plain iterator is accepted as well, but it restarts from its
beginning after a resume (a warning says so).

Stopping
--------
Ctrl-C (SIGINT) or SIGTERM (a batch scheduler's preemption) during :meth:`Trainer.fit` lets the step under way
finish, writes a checkpoint of it and then raises ``KeyboardInterrupt``, so a rerun resumes from that step and loses
nothing; a second signal stops at once. (In one process's main thread only: under DDP a signal stops at once and
the run resumes from the last periodic checkpoint, as after a crash.)

Steps are counted from 1: ``trainer.step == s`` means s steps have been taken; the batch of step s is the
dataset's item ``s - 1`` (``make_batches(...)``'s item for ``s - 1``).

Distributed data parallel
-------------------------
Call :func:`aime_rl.training.distributed.init_distributed` before building the trainer (``torchrun`` sets the
environment). With ``world_size > 1`` the model is wrapped in ``DistributedDataParallel`` with
``broadcast_buffers=False``: buffers are not overwritten by rank 0 before every forward. Models whose buffers must
agree across ranks keep them in sync themselves — the VQ codebook's EMA statistics are all-reduced inside
``VectorQuantize`` — and other buffers (e.g. BatchNorm statistics) stay per rank. ``loss_fn`` receives the DDP
module and must call its ``forward`` (``model(batch["frames"])``; a call to another method such as
``model.module.loss(...)`` bypasses DDP and gradients are not averaged). Each rank reads its own disjoint shard of
the step's global batch of ``batch_size * world_size`` windows (``batch_size`` is per rank), gradients are averaged,
rank 0 alone writes TensorBoard and checkpoints, and a step is skipped on all ranks when it is non-finite on any
rank.

:class:`TrainerConfig` lives in :mod:`aime_rl.training.config`, the optimiser and :func:`warmup_cosine` in
:mod:`aime_rl.training.optim`; both names are importable from here as well.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from aime_rl.replay.dataset import ReplayWindowDataset
from aime_rl.training.checkpoint import CheckpointManager
from aime_rl.training.config import TrainerConfig
from aime_rl.training.distributed import barrier, get_rank, get_world_size
from aime_rl.training.optim import make_optimizer, warmup_cosine
from aime_rl.training.signals import SignalStop

logger = logging.getLogger(__name__)

__all__ = [
    "LossFn",
    "MakeBatches",
    "Trainer",
    "TrainerConfig",
    "scalar_metrics",
    "seed_everything",
    "warmup_cosine",
]

Batch = Mapping[str, Any]
LossFn = Callable[[nn.Module, Batch], Mapping[str, Any]]
#: ``make_batches(seed, rank, start_step) -> iterator``: item k is the batch of step index ``start_step + k``.
MakeBatches = Callable[[int, int, int], Iterator[Batch]]
EvalFn = Callable[[nn.Module, int, "SummaryWriter | None"], Any]

MAX_LOGGED_VECTOR = 64  # 1-D loss entries longer than this are not logged element by element


# ----------------------------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def scalar_metrics(losses: Mapping[str, Any]) -> dict[str, float]:
    """The loggable numbers of a loss dict.

    0-dim tensors and Python numbers become ``{name: value}``; 1-D tensors of at most 64 elements become
    ``{name/0: v0, name/1: v1, ...}``; booleans, larger tensors and anything else are skipped.
    """
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    numbers: dict[str, float] = {}
    for name, value in losses.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            numbers[name] = float(value)
        elif isinstance(value, torch.Tensor) and value.dtype != torch.bool and not value.is_complex():
            if value.ndim == 0:
                names.append(name)
                tensors.append(value.detach().float().reshape(1))
            elif value.ndim == 1 and value.numel() <= MAX_LOGGED_VECTOR:
                names.extend(f"{name}/{i}" for i in range(value.numel()))
                tensors.append(value.detach().float())
    if tensors:
        values = torch.cat([t.to(tensors[0].device) for t in tensors]).cpu().tolist()  # one device sync
        numbers.update(zip(names, values, strict=True))
    return numbers


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {"class": type(model).__name__, **dataclasses.asdict(config)}
    return None


# ----------------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------------


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)["total"]``; see the module docstring.

    Args:
        model: the module to train (moved to ``config.device``; wrapped in DDP when ``world_size > 1``).
        loss_fn: ``loss_fn(model, batch) -> dict`` with a scalar ``"total"`` to minimise; every other 0-dim or
            short 1-D tensor/number in the dict is logged (``name`` / ``name/i``). Under DDP it gets the DDP module
            and must call its ``forward``.
        config: :class:`TrainerConfig`.
        logdir: TensorBoard event files go here, checkpoints to ``logdir/checkpoints``.
        train_batches: a :class:`~aime_rl.replay.dataset.ReplayWindowDataset` (its ``seed``, ``rank`` and
            ``world_size`` are replaced by ``config.seed`` and this process's; exact resume), a batch factory
            ``make_batches(seed, rank, start_step)`` (exact resume) or any iterable of batches (resume restarts
            it). Batches are dicts; their tensors are moved to the device (``frames`` stay uint8
            ``[B, T, 3, H, W]``; models convert them).
        eval_fn: ``eval_fn(model, step, writer)`` every ``eval_every`` steps and after the last step, with the
            unwrapped model in eval mode under ``torch.no_grad()``. It runs on every rank (so collectives inside
            the model match); ``writer`` is ``None`` except on rank 0.
        progress: show a tqdm bar (``None``: when stderr is a terminal, on rank 0).
        model_config: JSON-able settings saved as ``config.json["model"]`` in checkpoints (default: the model's
            ``config`` dataclass when it has one).
        ddp_kwargs: extra keyword arguments of ``DistributedDataParallel`` (e.g. ``find_unused_parameters``).

    Attributes:
        model: the unwrapped module; ``train_model``: what ``loss_fn`` gets (the DDP wrapper or ``model``).
        optimizer, scheduler, checkpoints (:class:`CheckpointManager`), step, bad_steps, consecutive_bad_steps.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        config: TrainerConfig,
        logdir: str | os.PathLike,
        train_batches: ReplayWindowDataset | MakeBatches | Iterable[Batch],
        eval_fn: EvalFn | None = None,
        *,
        progress: bool | None = None,
        model_config: Mapping[str, Any] | None = None,
        ddp_kwargs: Mapping[str, Any] | None = None,
    ):
        self.config = config
        self.logdir = Path(logdir)
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.train_batches = train_batches
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        self.device = self._resolve_device(config.device)
        self.progress = progress
        self.model_config = dict(model_config) if model_config is not None else _model_config(model)

        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            options = {"broadcast_buffers": False, **(ddp_kwargs or {})}
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids, **options)
        self.optimizer = make_optimizer(self.model, config.lr, config.weight_decay)
        warmup, total = config.warmup_steps, config.steps
        self.scheduler = LambdaLR(self.optimizer, lambda i: warmup_cosine(i, warmup, total))
        self.checkpoints = CheckpointManager(self.logdir / "checkpoints", keep_last=config.keep_last)
        self.writer: SummaryWriter | None = None
        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad_steps = 0
        self._last_checkpoint_step: int | None = None

    # -- setup ---------------------------------------------------------------------------------------------------

    def _resolve_device(self, name: str) -> torch.device:
        device = torch.device(name)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"TrainerConfig.device={name!r} but CUDA is not available")
            if device.index is None:
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return device

    @property
    def _autocast(self):
        if self.config.amp_bf16 and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _batch_iterator(self, start_step: int) -> Iterator[Batch]:
        if isinstance(self.train_batches, ReplayWindowDataset):
            shard = self.train_batches.shard(self.rank, self.world_size, seed=self.config.seed)
            return shard.batches(start_step)
        if callable(self.train_batches) and not isinstance(self.train_batches, Iterable):
            return iter(self.train_batches(self.config.seed, self.rank, start_step))
        if start_step > 0:
            logger.warning(
                "resuming at step %d with a plain batch iterator: the data stream restarts from its beginning "
                "(pass a ReplayWindowDataset or a batch factory for exact resume)",
                start_step,
            )
        return iter(self.train_batches)

    def _open_writer(self, start_step: int) -> SummaryWriter | None:
        if not self.is_main:
            return None
        # purge_step: TensorBoard drops the events a crashed run logged after the checkpoint we resume from
        writer = SummaryWriter(
            log_dir=str(self.logdir), purge_step=start_step + 1 if start_step > 0 else None
        )
        if start_step == 0:
            text = json.dumps(self._checkpoint_config(), indent=2, sort_keys=True, default=str)
            writer.add_text("trainer/config", "\n".join("    " + line for line in text.splitlines()), 0)
        return writer

    def _progress_bar(self, start_step: int) -> tqdm:
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        return tqdm(
            total=self.config.steps,
            initial=start_step,
            disable=not (show and self.is_main),
            dynamic_ncols=True,
            unit="step",
            desc="train",
        )

    def _progress_line(self, start: int, end: int) -> None:
        """Without a terminal (nohup, SLURM) and with ``progress=None``, print a line with rate and ETA at every
        tenth of the run instead of the tqdm bar (rank 0 only)."""
        if self.progress is not None or sys.stderr.isatty() or not self.is_main:
            return
        every = max(-(-(end - start) // 10), 1)  # ceil: at most ten lines and the last
        if (self.step - start) % every and self.step != end:
            return
        elapsed = max(time.perf_counter() - self._fit_started, 1e-9)
        rate = (self.step - start) / elapsed
        eta = (end - self.step) / rate if rate > 0 else float("inf")
        print(
            f"{self.logdir.name}: step {self.step}/{self.config.steps} ({100 * self.step / self.config.steps:.0f}%), "
            f"{rate:.2f} steps/s, ETA {eta:.0f} s",
            flush=True,
        )

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def _checkpoint_config(self) -> dict[str, Any]:
        return {
            "trainer": dataclasses.asdict(self.config),
            "model": self.model_config,
            "world_size": self.world_size,
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only; returns its path there, ``None`` elsewhere)."""
        self._last_checkpoint_step = self.step
        if not self.is_main:
            return None
        extra = {
            "bad_steps": self.bad_steps,
            "consecutive_bad_steps": self.consecutive_bad_steps,
            "seed": self.config.seed,
            "world_size": self.world_size,
        }
        return self.checkpoints.save(
            self.step,
            self.model,
            self.optimizer,
            self.scheduler,
            extra=extra,
            config=self._checkpoint_config(),
        )

    def resume(self) -> int:
        """Restore the newest checkpoint of ``logdir/checkpoints`` if there is one; return the step to continue from.

        Under DDP every rank loads the same files (a shared file system is assumed) and restores rank 0's RNG state.
        """
        state = self.checkpoints.load_latest(self.model, self.optimizer, self.scheduler)
        if state is None:
            return self.step
        for (
            group
        ) in self.optimizer.param_groups:  # the saved state carries the saver's choice; this machine's holds
            group["fused"] = self.optimizer.defaults.get("fused")
        if state.get("seed") != self.config.seed or state.get("world_size") != self.world_size:
            logger.warning(
                "resuming a run with seed=%s, world_size=%s as seed=%s, world_size=%s: the data stream differs",
                state.get("seed"),
                state.get("world_size"),
                self.config.seed,
                self.world_size,
            )
        self._apply_new_learning_rate(self.checkpoints.read_config(self.checkpoints.latest_path()))
        self.step = self._last_checkpoint_step = state["step"]
        self.bad_steps = int(state.get("bad_steps", 0))
        self.consecutive_bad_steps = int(state.get("consecutive_bad_steps", 0))
        logger.info("resumed from %s at step %d", self.checkpoints.latest_path(), self.step)
        return self.step

    def _apply_new_learning_rate(self, saved: Mapping[str, Any]) -> None:
        """A checkpoint restores the learning rate it was trained with; a different ``config.lr`` is applied from
        the resumed step on (same schedule, new peak) and logged, never silently dropped."""
        saved_lr = saved.get("trainer", {}).get("lr")
        if saved_lr is None or saved_lr == self.config.lr:
            return
        message = f"resuming with lr={self.config.lr:g} instead of the checkpoint's {saved_lr:g}"
        logger.warning(message)
        if self.is_main:
            print(f"{self.logdir.name}: {message}", file=sys.stderr)
        peaks = [self.config.lr * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]
        self.scheduler.base_lrs = peaks
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, peak in zip(self.optimizer.param_groups, peaks, strict=True):
            group["initial_lr"] = peak
            group["lr"] = peak * factor

    # -- one step ------------------------------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> dict[str, Any]:
        """One optimisation step on ``batch``; returns the (detached) loss dict plus ``lr``, ``grad_norm``, ``skipped``.

        Non-finite loss or gradient norm (on any rank): no parameter update, no schedule step, gradients dropped,
        ``bad_steps`` counted; ``RuntimeError`` after ``max_bad_steps`` consecutive ones.
        """
        self.train_model.train()
        batch = _to_device(batch, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        with self._autocast:
            losses = dict(self.loss_fn(self.train_model, batch))
        total = losses.get("total")
        if not isinstance(total, torch.Tensor) or total.ndim != 0:
            raise TypeError(
                f"loss_fn must return a dict with a scalar tensor 'total', got {type(total).__name__}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            total.float().backward()  # always, even when non-finite: DDP ranks must all join the gradient all-reduce
        grad_norm = self._clip_gradients()
        finite = self._all_finite(total.detach(), grad_norm)
        self.step += 1
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.consecutive_bad_steps = 0
        else:
            self._skip_step(total, grad_norm)
        detached = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}
        return {**detached, "lr": lr, "grad_norm": grad_norm.detach(), "skipped": not finite}

    def _clip_gradients(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return torch.zeros((), device=self.device)
        max_norm = self.config.grad_clip if self.config.grad_clip else float("inf")
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def _all_finite(self, total: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        finite = (torch.isfinite(total.float()) & torch.isfinite(grad_norm.float())).float().reshape(1)
        if self.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _skip_step(self, total: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        total, grad_norm = total.detach(), grad_norm.detach()
        self.bad_steps += 1
        self.consecutive_bad_steps += 1
        logger.warning(
            "step %d skipped: non-finite loss (%s) or gradient norm (%s); %d in a row",
            self.step,
            float(total),
            float(grad_norm),
            self.consecutive_bad_steps,
        )
        if self.consecutive_bad_steps >= self.config.max_bad_steps:
            raise RuntimeError(
                f"{self.consecutive_bad_steps} consecutive training steps (up to step {self.step}) had a non-finite "
                f"loss or gradient norm (last loss {float(total)}, grad norm {float(grad_norm)}); parameters were "
                "not updated by them. Lower the learning rate, check the data for NaN/inf, or resume from the last "
                f"checkpoint in {self.checkpoints.directory}"
            )

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self, stop_at: int | None = None) -> dict[str, float]:
        """Train to ``config.steps`` (or stop after step ``stop_at``), resuming from the latest checkpoint first.

        A checkpoint is written every ``checkpoint_every`` steps and when the loop ends, and on SIGINT / SIGTERM
        before ``KeyboardInterrupt`` is raised (the module's "Stopping"). Returns the scalars of the last step
        (``step``, ``total``, ..., ``bad_steps``).
        """
        start = self.resume()
        if start and self.is_main and start < self.config.steps:
            print(f"{self.logdir.name}: resuming from step {start} of {self.config.steps}", file=sys.stderr)
        end = self.config.steps if stop_at is None else min(int(stop_at), self.config.steps)
        self.writer = self._open_writer(start)
        bar = self._progress_bar(start)
        self._fit_started = time.perf_counter()
        last: dict[str, float] = {}
        batches = self._batch_iterator(start)
        tick, tick_step = time.perf_counter(), start
        try:
            with SignalStop(enabled=self.world_size == 1) as stop:
                while self.step < end:
                    out = self.train_step(next(batches))
                    if self.step % self.config.log_every == 0 or self.step == end:
                        now = time.perf_counter()
                        last = self._log(out, (self.step - tick_step) / max(now - tick, 1e-9))
                        tick, tick_step = now, self.step
                        bar.set_postfix(loss=f"{last.get('total', float('nan')):.4g}", lr=f"{last['lr']:.2e}")
                    bar.update(1)
                    self._progress_line(start, end)
                    if self._due(self.config.eval_every) or self.step == self.config.steps:
                        self.evaluate()
                    if self._due(self.config.checkpoint_every):
                        self.save_checkpoint()
                    if stop.requested:
                        self._stop_with_checkpoint(stop.signal_name)
            if self._last_checkpoint_step != self.step:
                self.save_checkpoint()
            barrier()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        return {"step": float(self.step), **last, "bad_steps": float(self.bad_steps)}

    def _stop_with_checkpoint(self, signal_name: str) -> None:
        """Write a checkpoint of the step just finished (unless there is one) and raise ``KeyboardInterrupt``."""
        if self._last_checkpoint_step != self.step:
            self.save_checkpoint()
        message = f"{signal_name} after step {self.step}: checkpoint saved; run again to resume from it"
        if self.is_main:
            print(f"\n{self.logdir.name}: {message}", file=sys.stderr)
        raise KeyboardInterrupt(message)

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _log(self, out: Mapping[str, Any], steps_per_second: float) -> dict[str, float]:
        scalars = scalar_metrics({k: v for k, v in out.items() if k != "skipped"})
        scalars["bad_steps"] = float(self.bad_steps)
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, self.step)
            self.writer.add_scalar("train/steps_per_second", steps_per_second, self.step)
        return scalars

    def evaluate(self) -> Any:
        """Run ``eval_fn(model, step, writer)`` (eval mode, no grad); a no-op without ``eval_fn``."""
        if self.eval_fn is None:
            return None
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast:
                result = self.eval_fn(self.model, self.step, self.writer)
        finally:
            self.model.train()
        if self.writer is not None:
            self.writer.flush()
        return result
