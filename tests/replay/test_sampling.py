"""Window sampling of the replay store: windows within episodes, uniform or recency-weighted, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from aime_rl.replay import ReplayStore
from tests.replay.helpers import SMALL, decode_rows, encoded_episode, write_encoded_store


def test_windows_never_cross_episode_boundaries(tmp_path):
    steps = [2, 5, 9, 14, 30]  # rows 3, 6, 10, 15, 31; chunk_length 4 makes windows span chunk files
    store = write_encoded_store(tmp_path, steps, chunk_length=4)
    batch = store.sample_windows(512, 6, rng=np.random.default_rng(0))
    rows, tags = decode_rows(batch["frames"])
    episode_index, start = batch["episode_index"].numpy(), batch["start"].numpy()
    assert batch["frames"].shape == (512, 6, 3, 8, 8) and batch["frames"].is_contiguous()
    assert (tags == episode_index[:, None]).all()  # one episode per window (tag = episode index here)
    np.testing.assert_array_equal(rows, start[:, None] + np.arange(6))
    assert 0 not in set(episode_index)  # 3 rows < length 6
    last_row = np.array([steps[e] for e in episode_index])[:, None]
    np.testing.assert_array_equal(batch["is_last"].numpy(), rows == last_row)
    np.testing.assert_array_equal(batch["is_first"].numpy(), rows == 0)
    np.testing.assert_array_equal(batch["terminated"].numpy(), rows >= last_row - 1)
    actions = batch["actions"].numpy()
    expected_actions = np.where(rows == last_row, 0, episode_index[:, None] * 1000 + rows)
    np.testing.assert_array_equal(actions, expected_actions)
    assert set(episode_index) == {1, 2, 3, 4}
    assert set(start[episode_index == 4]) == set(range(31 - 6 + 1))  # every start reachable, none beyond


def test_uniform_over_windows_and_recency_favours_new_episodes(tmp_path):
    store = write_encoded_store(tmp_path, [2, 9, 19, 39])  # rows 3, 10, 20, 40
    eligible, p = store.window_weights(5)
    np.testing.assert_array_equal(eligible, [1, 2, 3])
    np.testing.assert_allclose(p, np.array([6, 16, 36]) / 58)
    counts = np.bincount(store.sample_windows(6000, 5, rng=1)["episode_index"].numpy(), minlength=4)
    np.testing.assert_allclose(counts[1:] / 6000, p, atol=0.03)

    equal = write_encoded_store(tmp_path / "equal", [19] * 8)
    _, uniform_p = equal.window_weights(5)
    _, recent_p = equal.window_weights(5, recency=2.0)
    np.testing.assert_allclose(uniform_p, 1 / 8)
    np.testing.assert_allclose(recent_p[:-1] / recent_p[1:], 2**-0.5)  # half-life of 2 episodes
    sampled = equal.sample_windows(4000, 5, rng=2, recency=2.0)["episode_index"].numpy()
    np.testing.assert_allclose(np.bincount(sampled, minlength=8) / 4000, recent_p, atol=0.03)
    assert recent_p[-1] > 0.3 and recent_p[0] < 0.03


def test_no_episode_long_enough_raises(tmp_path):
    store = write_encoded_store(tmp_path, [2, 4])
    with pytest.raises(ValueError, match="no episode .* at least length=6 rows .*longest has 5 rows"):
        store.sample_windows(4, 6, rng=0)
    with pytest.raises(ValueError, match="no episode"):
        ReplayStore(tmp_path / "empty", frame_shape=SMALL).sample_windows(4, 1, rng=0)


def test_split_is_deterministic_disjoint_and_stable_as_the_store_grows(tmp_path):
    store = write_encoded_store(tmp_path, [3] * 40)
    train, holdout = store.split(0.25, seed=3)
    assert set(train).isdisjoint(holdout) and set(train) | set(holdout) == set(range(40))
    assert 3 <= len(holdout) <= 20
    reopened = ReplayStore.open(tmp_path)
    np.testing.assert_array_equal(reopened.split(0.25, seed=3)[1], holdout)
    assert not np.array_equal(reopened.split(0.25, seed=4)[1], holdout)
    for tag in range(40, 60):
        store.add_episode(**encoded_episode(3, tag))
    grown_train, grown_holdout = store.split(0.25, seed=3)
    np.testing.assert_array_equal(grown_holdout[grown_holdout < 40], holdout)
    batch = store.sample_windows(64, 2, rng=0, episode_ids=grown_holdout)
    assert set(batch["episode_index"].numpy()) <= set(grown_holdout)
