"""Torch data pipeline over a :class:`~aime_rl.replay.store.ReplayStore`: endless batches of episode windows.

Sharding: every (rank, DataLoader worker) pair draws from the *whole* store with its own random stream, seeded by
``numpy.random.default_rng([seed, rank, worker_id])``. Streams of different ranks/workers are statistically
independent (NumPy ``SeedSequence``), which for sampling with replacement is what disjoint episode shards would
give, without making each rank's data depend on how episodes happen to split. The held-out split
(``subset="train" | "holdout"``) is by episode and identical on every rank and worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from aime_rl.replay.store import ReplayStore

SUBSETS = ("all", "train", "holdout")


class ReplayWindowDataset(IterableDataset):
    """Endless stream of window batches (each item is one whole batch; use ``DataLoader(batch_size=None)``).

    Each item is the dict of :meth:`ReplayStore.sample_windows`: ``frames`` uint8 ``[B, T, 3, H, W]``,
    ``actions [B, T, ...]``, ``rewards``/``terminated``/``truncated``/``is_first``/``is_last`` ``[B, T]``,
    ``episode_index``/``start`` ``[B]``.

    The store is opened lazily inside each worker (read-only), so the dataset pickles as a few plain fields and
    works with any multiprocessing start method.

    Args:
        store_dir: directory of the store.
        batch_size, length: windows per batch ``B`` and rows per window ``T``.
        seed: base seed; the stream is ``default_rng([seed, rank, worker_id])``.
        rank, world_size: DDP position (``0 <= rank < world_size``), see the module docstring.
        recency: half-life in episodes for recency-weighted sampling, ``None`` for uniform over windows.
        subset, holdout_fraction, split_seed: sample from all episodes, or the train / held-out side of
            ``store.split(holdout_fraction, split_seed)``.
        refresh_every: rescan the store for newly committed episodes every this many batches (``None``: never).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        batch_size: int,
        length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        recency: float | None = None,
        subset: str = "all",
        holdout_fraction: float = 0.0,
        split_seed: int = 0,
        refresh_every: int | None = None,
    ):
        super().__init__()
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if refresh_every is not None and refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1 or None, got {refresh_every}")
        self.store_dir = os.fspath(store_dir)
        self.batch_size = batch_size
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.recency = recency
        self.subset = subset
        self.holdout_fraction = holdout_fraction
        self.split_seed = split_seed
        self.refresh_every = refresh_every
        self._store: ReplayStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None  # each worker opens its own memory maps
        return state

    @property
    def store(self) -> ReplayStore:
        """The store, opened read-only on first use in this process."""
        if self._store is None:
            self._store = ReplayStore.open(self.store_dir)
        return self._store

    def episode_ids(self) -> np.ndarray | None:
        """Episode indices of the chosen subset (``None``: all)."""
        if self.subset == "all":
            return None
        train, holdout = self.store.split(self.holdout_fraction, self.split_seed)
        return train if self.subset == "train" else holdout

    def worker_rng(self) -> np.random.Generator:
        """This worker's random stream: ``default_rng([seed, rank, worker_id])``."""
        info = get_worker_info()
        worker_id = 0 if info is None else info.id
        return np.random.default_rng([self.seed, self.rank, worker_id])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = self.worker_rng()
        episode_ids = self.episode_ids()
        batches = 0
        while True:
            due = self.refresh_every is not None and batches and batches % self.refresh_every == 0
            if due and self.store.refresh():
                episode_ids = self.episode_ids()
            yield self.store.sample_windows(self.batch_size, self.length, rng, self.recency, episode_ids)
            batches += 1


def make_replay_loader(
    store_dir: str | os.PathLike,
    batch_size: int,
    length: int,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    recency: float | None = None,
    subset: str = "all",
    holdout_fraction: float = 0.0,
    split_seed: int = 0,
    refresh_every: int | None = None,
    pin_memory: bool = False,
    prefetch_factor: int | None = 2,
) -> DataLoader:
    """An endless ``DataLoader`` of window batches from ``store_dir`` (see :class:`ReplayWindowDataset`).

    The store is checked in the calling process first, so an empty store or windows longer than every episode
    raise ``ValueError`` here rather than inside a worker.
    """
    dataset = ReplayWindowDataset(
        store_dir,
        batch_size,
        length,
        seed=seed,
        rank=rank,
        world_size=world_size,
        recency=recency,
        subset=subset,
        holdout_fraction=holdout_fraction,
        split_seed=split_seed,
        refresh_every=refresh_every,
    )
    dataset.store.window_weights(length, recency, dataset.episode_ids())  # fail fast, in this process
    dataset._store = None
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )
