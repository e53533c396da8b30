"""The data side of the probing protocol: the episode split, duplicate removal, the entropy filter."""

from __future__ import annotations

import numpy as np
import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import (
    probe_representations,
    remove_test_duplicates,
    select_variables,
    split_by_episode,
)
from tests.evaluation.helpers import FAST, synthetic


def test_split_by_episode_and_duplicates():
    data = synthetic({"a": np.arange(200) % 7}, episodes=20)
    split = split_by_episode(data.episode_ids, seed=1)
    parts = [split.train_episodes, split.val_episodes, split.test_episodes]
    assert [len(p) for p in parts] == [14, 2, 4]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    for rows, eps in zip((split.train, split.val, split.test), parts, strict=True):
        assert set(data.episode_ids[rows]) == set(eps)  # no episode in two splits
    again = split_by_episode(data.episode_ids, seed=1)
    assert np.array_equal(again.test, split.test)
    assert not np.array_equal(split_by_episode(data.episode_ids, seed=2).test_episodes, split.test_episodes)

    # make three test frames copies of training/validation frames
    hashes = data.hashes.copy()
    hashes[split.test[:2]] = hashes[split.train[5]]
    hashes[split.test[7]] = hashes[split.val[0]]
    deduped = remove_test_duplicates(split, hashes)
    assert deduped.duplicates_removed == 3
    assert len(deduped.test) == len(split.test) - 3
    assert not np.isin(hashes[deduped.test], hashes[np.r_[split.train, split.val]]).any()
    with pytest.raises(ValueError, match="at least 3 episodes"):
        split_by_episode(np.repeat([0, 1], 5))


def test_entropy_filter_drops_near_constant_variable():
    n = 400
    near_constant = np.zeros(n, dtype=np.int64)
    near_constant[::100] = 1  # entropy ≈ 0.056 nats
    varied = np.arange(n, dtype=np.int64) % 4  # ln 4 ≈ 1.39 nats
    data = synthetic({"near_constant": near_constant, "varied": varied}, episodes=10)
    kept, dropped, entropies = select_variables(data, np.arange(n), 0.6)
    assert kept == ["varied"] and list(dropped) == ["near_constant"]
    assert entropies["varied"] == pytest.approx(np.log(4))
    report = probe_representations(data, {"majority": None}, FAST)
    assert list(report.variables) == ["varied"] and "near_constant" in report.dropped
