"""ReplayStore: round trip, validation, concurrent writers, the format version (CPU, temporary directories)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aime_rl.replay import ReplayStore
from tests.replay.helpers import SMALL, encoded_episode, painted_frames, write_encoded_store


def test_round_trip_identical_arrays_with_memory_mapped_frames(tmp_path):
    steps = [1, 3, 4, 8, 11]  # rows 2, 4, 5, 9, 12 with chunk_length=4: single, exact multiples, remainders
    write_encoded_store(tmp_path, steps, chunk_length=4)
    store = ReplayStore.open(tmp_path)
    assert not store.recovery_report and len(store) == len(steps)
    assert json.loads((tmp_path / "meta.json").read_text())["action_dtype"] == "int64"
    for episode, (tag, n) in zip(store.episodes, enumerate(steps), strict=True):
        expected = encoded_episode(n, tag)
        assert episode.complete and episode.has_final_observation and episode.num_steps == n
        assert len(episode.chunks) == -(-(n + 1) // 4)
        np.testing.assert_array_equal(episode.frames(), expected["frames"])
        np.testing.assert_array_equal(episode.actions, [*expected["actions"], 0])
        np.testing.assert_array_equal(episode.rewards, [*expected["rewards"], 0])
        np.testing.assert_array_equal(episode.terminated, [*expected["terminated"], True])
        np.testing.assert_array_equal(episode.truncated, np.zeros(n + 1, dtype=bool))
        assert episode.actions.dtype == np.int64 and episode.rewards.dtype == np.float32
        assert isinstance(episode.frames(0, 2), np.memmap)  # lazy: a view into the mapped file
    store.verify()


def test_float_vector_actions_round_trip(tmp_path):
    store = ReplayStore(tmp_path, frame_shape=SMALL)
    actions = np.random.default_rng(0).normal(size=(5, 2))
    writer = store.begin_episode()
    for t in range(5):
        writer.add(painted_frames(1, 0)[0], actions[t], 0.0, False, t == 4)
    writer.finish(painted_frames(1, 0)[0])
    episode = ReplayStore.open(tmp_path).episodes[0]
    assert episode.actions.dtype == np.float32 and episode.actions.shape == (6, 2)
    np.testing.assert_allclose(episode.actions[:5], actions.astype(np.float32))
    np.testing.assert_array_equal(episode.actions[5], [0, 0])
    assert episode.truncated[-2:].all() and not episode.terminated.any()


def test_bad_frames_actions_and_steps_raise_value_error(tmp_path):
    store = ReplayStore(tmp_path, frame_shape=SMALL)
    writer = store.begin_episode()
    with pytest.raises(ValueError, match="frame must be uint8"):
        writer.add(np.zeros((9, 8, 3), np.uint8), 0, 0.0, False, False)
    writer.add(painted_frames(1, 0)[0], 1, 0.0, False, False)
    with pytest.raises(ValueError, match="shape"):
        writer.add(painted_frames(1, 0)[0], [1, 2], 0.0, False, False)
    with pytest.raises(ValueError, match="castable"):
        writer.add(painted_frames(1, 0)[0], 0.5, 0.0, False, False)
    writer.add(painted_frames(1, 0)[0], 2, 0.0, True, False)
    with pytest.raises(ValueError, match="already terminated"):
        writer.add(painted_frames(1, 0)[0], 3, 0.0, False, False)
    writer.finish(painted_frames(1, 0)[0])


@pytest.mark.parametrize(
    ("open_store", "match"),
    [
        (lambda path: ReplayStore(path, frame_shape=(16, 16, 3)), "frame_shape"),
        (lambda path: ReplayStore.open(path).begin_episode(), "read-only"),
        (lambda path: ReplayStore.open(path / "missing"), "not a replay store"),
    ],
    ids=["other-frame_shape", "writing-a-read-only-store", "missing-directory"],
)
def test_bad_store_arguments_raise_value_error(tmp_path, open_store, match):
    write_encoded_store(tmp_path, [2])
    with pytest.raises(ValueError, match=match):
        open_store(tmp_path)


def test_concurrent_writers_and_reader_refresh(tmp_path):
    first = ReplayStore(tmp_path, frame_shape=SMALL, chunk_length=3)
    second = ReplayStore(tmp_path, chunk_length=3)
    reader = ReplayStore.open(tmp_path)
    a, b = first.begin_episode(), second.begin_episode()
    frames = painted_frames(8, 0)
    for t in range(7):  # interleaved writes from two writers
        a.add(frames[t], t, 0.0, False, t == 6)
        b.add(frames[t], t, 0.0, t == 6, False)
    assert reader.refresh() == 12 and len(reader) == 2 and reader.recovery_report.incomplete_episodes
    a.finish(frames[7])
    b.finish(frames[7])
    assert reader.refresh() == 4
    assert [len(e) for e in reader.episodes] == [8, 8] and not reader.recovery_report
    assert reader.episodes[0].truncated[-1] != reader.episodes[1].truncated[-1]


def test_a_replay_store_of_an_unknown_format_version_is_refused(tmp_path):
    ReplayStore(tmp_path, frame_shape=(8, 8, 3))
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == 1
    meta_path.write_text(json.dumps({**meta, "version": 99}))
    for open_store in (ReplayStore, ReplayStore.open):
        with pytest.raises(ValueError, match=r"meta\.json has replay format version 99.*reads version 1"):
            open_store(tmp_path)
