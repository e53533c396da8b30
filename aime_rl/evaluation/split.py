"""The data side of the probing protocol: the episode split (70/10/20), test frames seen in training removed, the
variables worth probing, and features standardised with the training split's statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labelled_frames import LabelledFrames
from .metrics import entropy_nats

__all__ = ["Split", "remove_test_duplicates", "select_variables", "split_by_episode", "standardise"]


@dataclass
class Split:
    """Row indices (int64, sorted) of each split and the episode ids behind them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_episodes: np.ndarray
    val_episodes: np.ndarray
    test_episodes: np.ndarray
    duplicates_removed: int = 0

    def sizes(self) -> dict[str, int]:
        return {
            "train_frames": len(self.train),
            "val_frames": len(self.val),
            "test_frames": len(self.test),
            "train_episodes": len(self.train_episodes),
            "val_episodes": len(self.val_episodes),
            "test_episodes": len(self.test_episodes),
            "test_duplicates_removed": self.duplicates_removed,
        }


def split_by_episode(
    episode_ids: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> Split:
    """Shuffle the episodes with ``seed`` and cut them ``fractions`` (train/val/test) of the episode count.

    Validation and test get ``max(1, round(f * E))`` episodes each, train the rest (the paper's cut for E ≥ 4).
    Raises ``ValueError`` with fewer than 3 episodes.
    """
    episode_ids = np.asarray(episode_ids)
    episodes = np.unique(episode_ids)
    n = len(episodes)
    total = float(sum(fractions))
    n_val = max(1, round(fractions[1] / total * n))
    n_test = max(1, round(fractions[2] / total * n))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"splitting by episode needs at least 3 episodes (one per split), got {n}; collect more steps or "
            "cut episodes shorter (max_episode_steps)"
        )
    shuffled = np.random.default_rng(seed).permutation(episodes)
    train_eps = np.sort(shuffled[: n - n_val - n_test])
    val_eps = np.sort(shuffled[n - n_val - n_test : n - n_test])
    test_eps = np.sort(shuffled[n - n_test :])

    def rows(eps: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(episode_ids, eps)).astype(np.int64)

    return Split(rows(train_eps), rows(val_eps), rows(test_eps), train_eps, val_eps, test_eps)


def remove_test_duplicates(split: Split, hashes: np.ndarray) -> Split:
    """Drop test rows whose frame hash occurs in the train or validation split (the paper's deduplication)."""
    seen = np.concatenate([hashes[split.train], hashes[split.val]])
    keep = ~np.isin(hashes[split.test], seen)
    test = split.test[keep]
    if len(test) == 0:
        raise ValueError(
            "every test frame also occurs in the train/validation split; collect more varied data"
        )
    return Split(
        split.train,
        split.val,
        test,
        split.train_episodes,
        split.val_episodes,
        split.test_episodes,
        duplicates_removed=split.duplicates_removed + int((~keep).sum()),
    )


def select_variables(
    data: LabelledFrames, train: np.ndarray, entropy_threshold: float = 0.6
) -> tuple[list[str], dict[str, str], dict[str, float]]:
    """``(kept, dropped, entropies)``: the variables worth probing, on the training rows.

    Discrete variables with entropy < ``entropy_threshold`` nats are dropped, continuous ones that are constant.
    ``dropped`` maps a name to the reason; ``entropies`` holds every discrete variable's training entropy.
    """
    kept, dropped, entropies = [], {}, {}
    for name, info in data.variables.items():
        values = data.labels[name][train]
        if info.kind == "discrete":
            entropies[name] = entropy_nats(values)
            if entropies[name] < entropy_threshold:
                dropped[name] = f"entropy {entropies[name]:.3f} nats < {entropy_threshold}"
                continue
        elif float(np.std(values)) == 0.0:
            dropped[name] = "constant on the training split"
            continue
        kept.append(name)
    return kept, dropped, entropies


def standardise(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with the training rows' statistics (std 1 where a feature is constant)."""
    x = np.asarray(features, dtype=np.float32)
    mean = x[train].mean(axis=0, dtype=np.float64)
    std = x[train].std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return ((x - mean) / std).astype(np.float32)
