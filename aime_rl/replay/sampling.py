"""Window sampling from a replay store: the held-out split, window weights, and window gathering.

:class:`WindowSampler` holds the sampling half of :class:`~aime_rl.replay.store.ReplayStore`'s API (the store
inherits it): ``split``, ``window_weights``, ``sample_windows``, ``sample_window_starts`` and ``read_windows``.
It reads only ``self.episodes``, ``self.frame_shape`` and ``self.directory``; windows never cross episode
boundaries, and rows follow the step convention of :mod:`aime_rl.replay.store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aime_rl.replay.chunks import DATA_KEYS
from aime_rl.replay.episode import Episode


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class WindowSampler:
    """Sampling methods of :class:`~aime_rl.replay.store.ReplayStore` (a base class; not used on its own).

    Needs ``episodes`` (``episodes[i].index == i``), ``frame_shape`` ``(H, W, 3)`` and ``directory`` (for error
    messages) from the subclass.
    """

    directory: Path
    episodes: list[Episode]
    frame_shape: tuple[int, int, int]

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic train/held-out split of episode indices: ``(train_indices, holdout_indices)`` int64.

        An episode is held out when a hash of ``(seed, episode key)`` falls below ``holdout_fraction``, so the
        held-out fraction is approximate and an episode's side never changes as the store grows (no leakage of
        eval episodes into training after more data is collected).
        """
        if not 0.0 <= holdout_fraction <= 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
        held = np.array([_unit_hash(seed, e.key) < holdout_fraction for e in self.episodes], dtype=bool)
        indices = np.arange(len(self.episodes), dtype=np.int64)
        return indices[~held], indices[held]

    def window_weights(
        self, length: int, recency: float | None = None, episode_ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Episodes that hold a window of ``length`` rows and their sampling probabilities.

        Uniform (``recency=None``): every valid window start in the store is equally likely, i.e. an episode's
        probability is proportional to its number of windows ``len - length + 1``. With ``recency=h`` (a half-life in
        episodes) that count is multiplied by ``0.5 ** ((newest_index - index) / h)``: an episode ``h`` episodes older
        than the newest is half as likely per window. Returns ``(episode_indices [E] int64, probabilities [E])``.
        """
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        candidates = range(len(self.episodes)) if episode_ids is None else episode_ids
        episodes = [self.episodes[int(i)] for i in candidates]
        eligible = np.array([e.index for e in episodes if len(e) >= length], dtype=np.int64)
        if len(eligible) == 0:
            longest = max((len(e) for e in episodes), default=0)
            raise ValueError(
                f"no episode in {self.directory} has at least length={length} rows "
                f"({len(episodes)} episodes considered, longest has {longest} rows)"
            )
        weights = np.array([len(self.episodes[i]) - length + 1 for i in eligible], dtype=np.float64)
        if recency is not None:
            if recency <= 0:
                raise ValueError(f"recency (half-life in episodes) must be > 0, got {recency}")
            age = (len(self.episodes) - 1 - eligible).astype(np.float64)
            weights *= np.exp2(-age / float(recency))
        return eligible, weights / weights.sum()

    def sample_windows(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator | int | None = None,
        recency: float | None = None,
        episode_ids: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample ``batch_size`` windows of ``length`` consecutive rows, each inside one episode.

        Episodes shorter than ``length`` rows are skipped; ``ValueError`` when none is long enough. Weights: see
        :meth:`window_weights`. ``episode_ids`` restricts sampling to those episode indices (e.g. from :meth:`split`).

        Returns torch tensors:
            ``frames``  uint8 ``[B, T, 3, H, W]`` (channels-first),
            ``actions`` ``[B, T, *action_shape]`` int64 or float32 (row ``t``'s action; dummy where ``is_last``),
            ``rewards`` float32 ``[B, T]``, ``terminated``/``truncated``/``is_first``/``is_last`` bool ``[B, T]``,
            ``episode_index``/``start`` int64 ``[B]`` (``store.episodes[i]`` and its first row).
        """
        chosen, starts = self.sample_window_starts(batch_size, length, rng, recency, episode_ids)
        return self.read_windows(chosen, starts, length)

    def sample_window_starts(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator | int | None = None,
        recency: float | None = None,
        episode_ids: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw the windows :meth:`sample_windows` would read, without reading them.

        Returns ``(episode_indices [B], starts [B])`` int64; window ``b`` is rows ``starts[b] : starts[b] + length``
        of ``store.episodes[episode_indices[b]]`` (pass both to :meth:`read_windows`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rng = np.random.default_rng(rng)
        eligible, probabilities = self.window_weights(length, recency, episode_ids)
        chosen = eligible[rng.choice(len(eligible), size=batch_size, p=probabilities)]
        num_windows = np.array([len(self.episodes[i]) - length + 1 for i in chosen])
        starts = (rng.random(batch_size) * num_windows).astype(np.int64)
        return chosen, starts

    def read_windows(
        self, episode_indices: Sequence[int], starts: Sequence[int], length: int
    ) -> dict[str, torch.Tensor]:
        """Gather given windows (same output as :meth:`sample_windows`)."""
        episode_indices = np.asarray(episode_indices, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        batch = len(episode_indices)
        height, width, channels = self.frame_shape
        frames = np.empty((batch, length, channels, height, width), dtype=np.uint8)
        fields: dict[str, list[np.ndarray]] = {name: [] for name in DATA_KEYS}
        is_first = np.zeros((batch, length), dtype=bool)
        is_last = np.zeros((batch, length), dtype=bool)
        rows = np.arange(length)
        for b, (index, start) in enumerate(zip(episode_indices, starts, strict=True)):
            episode = self.episodes[int(index)]
            if not 0 <= start <= len(episode) - length:
                raise ValueError(f"window {start}:{start + length} out of range for {episode}")
            episode.copy_frames_chw(int(start), frames[b])
            for name in DATA_KEYS:
                fields[name].append(getattr(episode, name)[start : start + length])
            is_first[b] = start + rows == 0
            is_last[b] = episode.complete & (start + rows == len(episode) - 1)
        return {
            "frames": torch.from_numpy(frames),
            **{name: torch.from_numpy(np.stack(values)) for name, values in fields.items()},
            "is_first": torch.from_numpy(is_first),
            "is_last": torch.from_numpy(is_last),
            "episode_index": torch.from_numpy(episode_indices.copy()),
            "start": torch.from_numpy(starts.copy()),
        }
