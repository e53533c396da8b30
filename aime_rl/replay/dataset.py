"""Window batches from a :class:`~aime_rl.replay.store.ReplayStore`: one deterministic batch per training step.

:class:`ReplayWindowDataset` is the one window-sampling path of the library: the trainers, the DataLoader workers and
the DDP ranks all draw through it. It is a map-style ``torch.utils.data.Dataset`` whose item ``s`` is the *whole*
batch of step index ``s`` (a dict, see :meth:`ReplayStore.sample_windows`): ``frames`` uint8 ``[B, T, 3, H, W]``,
``actions [B, T, *action_shape]``, ``rewards``/``terminated``/``truncated``/``is_first``/``is_last`` ``[B, T]``,
``episode_index``/``start`` int64 ``[B]``. A window never crosses an episode boundary.

The batch of step ``s``
-----------------------
For ``(seed, rank, world_size)`` the *global* batch of step ``s`` is ``batch_size * world_size`` windows drawn with
``numpy.random.default_rng([seed, s])`` (uniform over windows, or recency-weighted, over the ``subset`` episodes;
see :meth:`ReplayStore.window_weights`), and rank ``r`` reads rows ``[r * batch_size, (r + 1) * batch_size)`` of it.
Therefore:

* a batch is a pure function of ``(seed, step, rank)`` (with ``batch_size``, ``length``, ``world_size`` and the
  store's contents fixed): a trainer resumed at step ``s`` draws exactly the batches an uninterrupted one would,
  and there is no sampler state to save;
* ranks read disjoint shards (row ranges) of one global batch: ``N`` ranks of ``B`` windows see the windows one
  process of ``N * B`` windows sees, so DDP trains like a single process on the global batch;
* with ``world_size=1`` the batch equals ``store.sample_windows(B, T, default_rng([seed, s]), recency, ids)``.

The held-out split (``subset="train" | "holdout"``, by episode, :meth:`ReplayStore.split`) is the same on every rank.

Workers
-------
:meth:`ReplayWindowDataset.loader` wraps the dataset in a ``DataLoader`` whose sampler yields the steps
``start_step, start_step + 1, ...``; each worker computes the batches of the steps it is handed and the loader
returns them in step order, so ``num_workers > 0`` yields exactly the in-process batches. The store is opened once,
in the calling process, and that snapshot (episode list and split; memory maps are reopened by each worker) goes
to the workers: episodes committed later are not seen (build a new dataset to see them). The loader draws its
worker base seed from a private ``torch.Generator``, so creating it leaves the global torch RNG untouched (which
exact resume needs).
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aime_rl.replay.store import ReplayStore

SUBSETS = ("all", "train", "holdout")


class StepSampler(Sampler[int]):
    """Endless step indices ``start, start + 1, ...`` (the sampler of :meth:`ReplayWindowDataset.loader`)."""

    def __init__(self, start: int = 0):
        super().__init__()
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def _check_stream(seed: int, rank: int, world_size: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")


def _check_sampling(batch_size: int, length: int, recency: float | None, subset: str, workers: int) -> None:
    if batch_size < 1 or length < 1:
        raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
    if recency is not None and not recency > 0:
        raise ValueError(f"recency (half-life in episodes) must be > 0 or None, got {recency}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {workers}")


class ReplayWindowDataset(Dataset):
    """Item ``s`` is the batch of step index ``s`` for this ``(seed, rank, world_size)``; see the module docstring.

    Args:
        store_dir: directory of the replay store (opened read-only on first use).
        batch_size, length: windows per batch *per rank* ``B`` and rows per window ``T``.
        seed: seed of the data stream. A :class:`~aime_rl.training.trainer.Trainer` replaces ``seed``, ``rank`` and
            ``world_size`` by its own (``config.seed`` and the process group's) via :meth:`shard`.
        rank, world_size: DDP position (``0 <= rank < world_size``).
        recency: half-life in episodes for recency-weighted sampling, ``None`` for uniform over windows.
        subset, holdout_fraction, split_seed: sample from all episodes, or the train / held-out side of
            ``store.split(holdout_fraction, split_seed)``.
        num_workers: DataLoader worker processes of :meth:`loader` / :meth:`batches` (``0``: in this process).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        batch_size: int,
        length: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        recency: float | None = None,
        subset: str = "all",
        holdout_fraction: float = 0.0,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        _check_stream(seed, rank, world_size)
        _check_sampling(batch_size, length, recency, subset, num_workers)
        if not 0.0 <= holdout_fraction <= 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
        self.store_dir = os.fspath(store_dir)
        self.batch_size, self.length = int(batch_size), int(length)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.recency = recency
        self.subset, self.holdout_fraction, self.split_seed = subset, holdout_fraction, split_seed
        self.num_workers = int(num_workers)
        self._store: ReplayStore | None = None
        self._episode_ids: np.ndarray | None = None

    @classmethod
    def from_config(
        cls, store_dir: str | os.PathLike, config: Any, subset: str = "train", **kwargs: Any
    ) -> ReplayWindowDataset:
        """Batch size, window length, seed, hold-out fraction and workers from a ``TrainerConfig``."""
        kwargs.setdefault("seed", config.seed)
        kwargs.setdefault("holdout_fraction", config.holdout_fraction)
        kwargs.setdefault("num_workers", config.num_workers)
        return cls(store_dir, config.batch_size, config.sequence_length, subset=subset, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ReplayWindowDataset({self.store_dir!r}, batch_size={self.batch_size}, length={self.length}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size}, subset={self.subset!r})"
        )

    def shard(self, rank: int, world_size: int, seed: int | None = None) -> ReplayWindowDataset:
        """A copy drawing ``rank``'s shard of ``world_size`` (and stream ``seed``); shares this store snapshot."""
        seed = self.seed if seed is None else int(seed)
        _check_stream(seed, rank, world_size)
        shard = copy.copy(self)
        shard.seed, shard.rank, shard.world_size = seed, int(rank), int(world_size)
        return shard

    # -- the store snapshot -------------------------------------------------------------------------------------

    @property
    def store(self) -> ReplayStore:
        """The store, opened read-only on first use (and pickled to workers with the dataset)."""
        if self._store is None:
            self._store = ReplayStore.open(self.store_dir)
        return self._store

    def episode_ids(self) -> np.ndarray | None:
        """Episode indices of the ``subset`` (``None``: all); computed once, ``ValueError`` when empty."""
        if self.subset == "all":
            return None
        if self._episode_ids is None:
            train, holdout = self.store.split(self.holdout_fraction, self.split_seed)
            ids = train if self.subset == "train" else holdout
            if len(ids) == 0:
                raise ValueError(
                    f"the {self.subset!r} subset of {self.store_dir} is empty "
                    f"({len(self.store.episodes)} episodes, holdout_fraction={self.holdout_fraction})"
                )
            self._episode_ids = ids
        return self._episode_ids

    def check(self) -> ReplayWindowDataset:
        """Open the store and check that windows can be drawn (``ValueError`` otherwise); returns ``self``."""
        self.store.window_weights(self.length, self.recency, self.episode_ids())
        return self

    # -- batches -------------------------------------------------------------------------------------------------

    def window_starts(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(episode_indices [B], starts [B])`` int64 of this rank's windows at step index ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng([self.seed, int(step)])
        total = self.batch_size * self.world_size
        episodes, starts = self.store.sample_window_starts(
            total, self.length, rng, self.recency, self.episode_ids()
        )
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return episodes[rows], starts[rows]

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of step index ``step`` (see the module docstring for what it contains)."""
        episodes, starts = self.window_starts(step)
        return self.store.read_windows(episodes, starts, self.length)

    def loader(
        self, start_step: int = 0, *, pin_memory: bool = False, prefetch_factor: int | None = 2
    ) -> DataLoader:
        """An endless ``DataLoader`` of the batches of steps ``start_step, start_step + 1, ...``, in that order.

        Uses ``num_workers`` worker processes. The store is checked here first, so an empty store or windows longer
        than every episode raise ``ValueError`` in this process rather than inside a worker.
        """
        self.check()
        workers = self.num_workers
        return DataLoader(
            self,
            batch_size=None,
            sampler=StepSampler(start_step),
            num_workers=workers,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def batches(self, start_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Endless iterator over the batches of steps ``start_step, start_step + 1, ...`` (via :meth:`loader`)."""
        return iter(self.loader(start_step))
