"""Thin helpers around ``torch.distributed`` for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in every process. :func:`init_distributed` reads them and joins the process group (``gloo`` on CPU,
``nccl`` on CUDA); without them (or with ``WORLD_SIZE=1``) it does nothing, so the same script runs unchanged as a
single process::

    rank, world_size, local_rank = init_distributed()
    try:
        trainer = Trainer(model, loss_fn, config, logdir, make_batches)  # wraps the model in DDP when world_size > 1
        trainer.fit()
    finally:
        cleanup()
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from err


def init_distributed(
    backend: str | None = None, timeout: timedelta = timedelta(minutes=10)
) -> tuple[int, int, int]:
    """Join the process group described by the ``torchrun`` environment; return ``(rank, world_size, local_rank)``.

    No-op returning ``(0, 1, 0)`` when ``WORLD_SIZE`` is unset or 1. When the group is already initialised its
    values are returned. ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``; on CUDA the
    current device is set to ``cuda:LOCAL_RANK``. ``MASTER_ADDR``/``MASTER_PORT`` must be set (torchrun does it).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if is_distributed():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if world_size <= 1:
        return 0, 1, 0
    rank = _env_int("RANK", -1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {os.environ.get('RANK')!r}")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"distributed run (WORLD_SIZE={world_size}) needs environment variables {missing}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
    return rank, world_size, local_rank


def is_distributed() -> bool:
    """True inside an initialised process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that logs and writes checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if is_distributed():
        dist.destroy_process_group()
