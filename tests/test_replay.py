"""Replay store, window sampling, data loader and recorders (CPU, temporary directories)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

from aime_rl.replay import (
    RecordFrames,
    ReplayStore,
    ReplayWindowDataset,
    VecRecordFrames,
    resize_frames,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = (8, 8, 3)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def painted_frames(rows: int, tag: int, shape=SMALL) -> np.ndarray:
    """uint8 [rows, H, W, 3]: red = row % 256, green = tag, blue = row // 256."""
    frames = np.zeros((rows, *shape), dtype=np.uint8)
    frames[..., 0] = (np.arange(rows) % 256)[:, None, None]
    frames[..., 1] = tag
    frames[..., 2] = (np.arange(rows) // 256)[:, None, None]
    return frames


def encoded_episode(steps: int, tag: int, shape=SMALL) -> dict[str, np.ndarray]:
    """An episode whose frames and actions encode (tag, step); terminated on the last step."""
    return {
        "frames": painted_frames(steps + 1, tag, shape),
        "actions": tag * 1000 + np.arange(steps),
        "rewards": np.arange(steps, dtype=np.float32) + 0.5,
        "terminated": np.arange(steps) == steps - 1,
        "truncated": np.zeros(steps, dtype=bool),
    }


def write_encoded_store(directory, steps_per_episode, chunk_length=1000) -> ReplayStore:
    store = ReplayStore(directory, frame_shape=SMALL, chunk_length=chunk_length)
    for tag, steps in enumerate(steps_per_episode):
        store.add_episode(**encoded_episode(steps, tag))
    return store


def decode_rows(frames_chw) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, tags) from painted frames [..., 3, H, W]."""
    frames = np.asarray(frames_chw)
    rows = frames[..., 0, 0, 0].astype(np.int64) + 256 * frames[..., 2, 0, 0].astype(np.int64)
    return rows, frames[..., 1, 0, 0].astype(np.int64)


class PaintedEnv(gym.Env):
    """Pixel env whose frames show (step, episode number, env tag); even episodes terminate, odd ones truncate."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, lengths=(3, 5), tag=0, size=64, image_obs=True, render_mode=None):
        self.lengths, self.tag, self.size, self.render_mode = lengths, tag, size, render_mode
        if image_obs:
            self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.image_obs = image_obs
        self.episode, self.t = -1, 0

    def _frame(self):
        frame = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = self.t, self.episode, self.tag
        return frame

    def _obs(self):
        return self._frame() if self.image_obs else np.zeros(2, np.float32)

    def render(self):
        return self._frame()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.lengths[self.episode % len(self.lengths)]
        terminated = done and self.episode % 2 == 0
        return self._obs(), float(self.t), terminated, done and not terminated, {}


def check_recorded_episode(episode, steps, episode_number, tag, actions, cut=False):
    """Frames show steps 0..steps of one env episode; final row has a dummy action and the ending flags."""
    frames = episode.frames()
    assert len(episode) == steps + 1 and episode.complete and episode.has_final_observation
    np.testing.assert_array_equal(frames[:, 0, 0, 0], np.arange(steps + 1))
    assert (frames[..., 1] == episode_number).all() and (frames[..., 2] == tag).all()
    np.testing.assert_array_equal(episode.actions, [*actions, 0])
    np.testing.assert_array_equal(episode.rewards, [*range(1, steps + 1), 0])
    ended_by_termination = episode_number % 2 == 0 and not cut
    expected_end = np.arange(steps + 1) >= steps - 1
    np.testing.assert_array_equal(episode.terminated, expected_end & ended_by_termination)
    np.testing.assert_array_equal(episode.truncated, expected_end & (not ended_by_termination))


# ----------------------------------------------------------------------------------------------------------------
# store: round trip, validation
# ----------------------------------------------------------------------------------------------------------------


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


def test_bad_inputs_raise_value_error(tmp_path):
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
    with pytest.raises(ValueError, match="frame_shape"):
        ReplayStore(tmp_path, frame_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="read-only"):
        ReplayStore.open(tmp_path).begin_episode()
    with pytest.raises(ValueError, match="not a replay store"):
        ReplayStore.open(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------------------
# crash safety and corruption
# ----------------------------------------------------------------------------------------------------------------

CRASH_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import aime_rl.replay.store as store_module
    from aime_rl.replay import ReplayStore
    sys.path.insert(0, sys.argv[4])
    from test_replay import encoded_episode, painted_frames

    directory, mode, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = ReplayStore(directory, frame_shape=(8, 8, 3), chunk_length=4)
    for tag, steps in enumerate([3, 6, 9]):
        store.add_episode(**encoded_episode(steps, tag))

    if mode == "during_write":  # hang half-way through the data file of the long episode's third chunk
        real_atomic_write = store_module.atomic_write
        def slow_atomic_write(path, write):
            def half_write(tmp):
                write(tmp)
                size = Path(tmp).stat().st_size
                with open(tmp, "r+b") as f:
                    f.truncate(size // 2)
                ready.write_text("in write")
                time.sleep(600)
            if str(path).endswith("-c00002.data.npz"):
                return real_atomic_write(path, half_write)
            return real_atomic_write(path, write)
        store_module.atomic_write = slow_atomic_write

    long_episode = store.begin_episode()
    frames = painted_frames(10_000, 99)
    for t in range(10_000):
        long_episode.add(frames[t], 99_000 + t, 0.5 + t, False, False)
        if t == 8 and mode == "loop":  # two chunks committed; keep adding (and committing) until killed
            ready.write_text("looping")
    """
)


def start_crash_child(directory, mode, ready):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-c", CRASH_CHILD, str(directory), mode, str(ready), str(Path(__file__).parent)]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def kill_when_ready(process, ready, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise AssertionError(f"crash child exited early: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("crash child never signalled")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()


def test_sigkill_loses_only_the_unfinished_episode(tmp_path):
    # both children run at once: one killed while looping over add(), one killed inside a file write
    runs = {mode: (tmp_path / mode, tmp_path / f"{mode}.ready") for mode in ("loop", "during_write")}
    children = {mode: start_crash_child(d, mode, ready) for mode, (d, ready) in runs.items()}
    for mode, (_, ready) in runs.items():
        kill_when_ready(children[mode], ready)

    for mode, (directory, _) in runs.items():
        store = ReplayStore.open(directory)
        finished = [e for e in store.episodes if e.complete]
        assert len(finished) == 3, mode
        for tag, (episode, steps) in enumerate(zip(finished, [3, 6, 9], strict=True)):
            np.testing.assert_array_equal(episode.frames(), encoded_episode(steps, tag)["frames"])
            np.testing.assert_array_equal(episode.actions[:-1], encoded_episode(steps, tag)["actions"])
        (partial,) = [e for e in store.episodes if not e.complete]
        assert store.recovery_report.incomplete_episodes == [partial.key]
        assert len(partial) >= 8 and len(partial) % 4 == 0
        np.testing.assert_array_equal(partial.frames(), painted_frames(len(partial), 99))
        np.testing.assert_array_equal(partial.actions, 99_000 + np.arange(len(partial)))
        batch = store.sample_windows(16, 4, rng=0)  # everything committed loads and samples
        assert batch["frames"].shape == (16, 4, 3, 8, 8)
        store.verify()

    report = ReplayStore.open(runs["during_write"][0]).recovery_report
    (stray,) = report.stray_temp_files
    (orphan,) = report.orphan_files
    assert stray.name.startswith(".") and "-c00002.data.npz" in stray.name
    assert orphan.name.endswith("-c00002.frames.npy")
    assert len(ReplayStore.open(runs["during_write"][0]).episodes[-1]) == 8

    cleaned = ReplayStore(runs["during_write"][0], remove_orphans=True)
    assert set(cleaned.recovery_report.removed_files) == {stray, orphan}
    assert not stray.exists() and not orphan.exists()
    assert ReplayStore.open(runs["during_write"][0]).recovery_report.incomplete_episodes  # data kept


def damage_truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)


def damage_garbage(path):
    path.write_bytes(b"not what the marker committed" * 3)


@pytest.mark.parametrize(
    ("suffix", "damage"),
    [
        (".frames.npy", damage_truncate),
        (".frames.npy", lambda p: p.unlink()),
        (".data.npz", damage_truncate),
        (".data.npz", damage_garbage),
        (".commit.json", damage_garbage),
    ],
)
def test_damaged_committed_file_raises_value_error_naming_it_at_open(tmp_path, suffix, damage):
    write_encoded_store(tmp_path, [5, 6, 7])
    victim = sorted((tmp_path / "chunks").glob(f"*{suffix}"))[1]
    damage(victim)
    with pytest.raises(ValueError, match=victim.name):
        ReplayStore.open(tmp_path)


def test_pixel_damage_found_by_verify_and_vanished_file_when_sampled(tmp_path):
    write_encoded_store(tmp_path, [5, 6, 7])
    victim = sorted((tmp_path / "chunks").glob("*.frames.npy"))[2]
    with open(victim, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    store = ReplayStore.open(tmp_path)  # same size, valid header: only a checksum can tell
    with pytest.raises(ValueError, match=victim.name):
        store.verify()
    victim.unlink()
    with pytest.raises(ValueError, match=victim.name):
        store.sample_windows(8, 8, rng=0, episode_ids=[2])


# ----------------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# window dataset: deterministic per-step batches, DDP shards, DataLoader workers
# ----------------------------------------------------------------------------------------------------------------


def assert_same_batch(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_data_loader_with_two_workers_yields_the_in_process_batches(tmp_path):
    write_encoded_store(tmp_path, [19, 24, 29, 34, 39], chunk_length=8)
    dataset = ReplayWindowDataset(tmp_path, batch_size=4, length=5, seed=7, num_workers=2)
    in_process = [dataset[step] for step in range(3, 9)]
    loader = dataset.loader(start_step=3)
    assert loader.num_workers == 2
    for want, got in zip(in_process, loader, strict=False):  # the loader is endless: zip stops after 6
        assert_same_batch(got, want)
    torch_state = torch.random.get_rng_state()
    batches = dataset.batches(start_step=3)  # what the trainer iterates, also through the 2 workers
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # the global torch RNG is not advanced
    for want in in_process:
        assert_same_batch(next(batches), want)
    for batch in in_process:  # windows are [B, T, 3, H, W] uint8 inside one episode
        assert batch["frames"].shape == (4, 5, 3, 8, 8) and batch["frames"].dtype == torch.uint8
        assert batch["actions"].shape == (4, 5)
        rows, tags = decode_rows(batch["frames"])
        np.testing.assert_array_equal(tags, batch["episode_index"].numpy()[:, None].repeat(5, 1))
        np.testing.assert_array_equal(rows, batch["start"].numpy()[:, None] + np.arange(5))
    with pytest.raises(ValueError, match="at least length=60"):
        ReplayWindowDataset(tmp_path, batch_size=4, length=60, num_workers=2).loader()


@pytest.mark.parametrize("recency", [None, 2.0])
def test_batches_are_a_pure_function_of_seed_step_and_rank(tmp_path, recency):
    write_encoded_store(tmp_path, [9, 14, 19, 24, 29, 34])
    options = dict(batch_size=3, length=4, recency=recency, world_size=2)
    dataset = ReplayWindowDataset(tmp_path, seed=5, rank=1, **options)
    forward = [dataset[step] for step in range(6)]
    fresh = ReplayWindowDataset(tmp_path, seed=5, rank=1, **options)  # new object, store opened again
    for step in reversed(range(6)):  # any order: no hidden sampler state
        assert_same_batch(fresh[step], forward[step])
    assert not torch.equal(forward[0]["start"], forward[1]["start"])  # steps differ
    assert not torch.equal(
        ReplayWindowDataset(tmp_path, seed=6, rank=1, **options)[0]["start"], forward[0]["start"]
    )
    single = ReplayWindowDataset(
        tmp_path, 6, 4, seed=5, recency=recency
    )  # world_size 1: the store's own sampler
    expected = ReplayStore.open(tmp_path).sample_windows(6, 4, np.random.default_rng([5, 2]), recency)
    assert_same_batch(single[2], expected)


def test_ranks_read_disjoint_shards_of_one_global_batch(tmp_path):
    write_encoded_store(tmp_path, [9, 14, 19, 24, 29, 34])
    whole = ReplayWindowDataset(tmp_path, batch_size=6, length=4, seed=3)  # one process, global batch 6
    per_rank = ReplayWindowDataset(tmp_path, batch_size=2, length=4, seed=3)
    ranks = [per_rank.shard(rank, world_size=3) for rank in range(3)]  # what each DDP rank's Trainer draws
    for step in (0, 4):
        shards = [rank[step] for rank in ranks]
        for key, value in whole[step].items():  # rank r holds rows [2 r, 2 r + 2) of the global batch
            assert torch.equal(torch.cat([shard[key] for shard in shards]), value), key
        assert not torch.equal(shards[0]["frames"], shards[1]["frames"])
    shard = whole.shard(2, 3, seed=9)  # a copy with another stream identity; the original is unchanged
    assert (shard.rank, shard.world_size, shard.seed) == (2, 3, 9) and (whole.rank, whole.world_size) == (
        0,
        1,
    )
    with pytest.raises(ValueError, match="rank"):
        whole.shard(3, 3)
    with pytest.raises(ValueError, match="rank"):
        ReplayWindowDataset(tmp_path, 2, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step"):
        whole[-1]


def test_train_and_holdout_subsets_are_disjoint(tmp_path):
    write_encoded_store(tmp_path, [5] * 12)
    train = ReplayWindowDataset(tmp_path, 8, 2, subset="train", holdout_fraction=0.5)
    holdout = ReplayWindowDataset(tmp_path, 8, 2, subset="holdout", holdout_fraction=0.5)
    assert set(train.episode_ids()).isdisjoint(holdout.episode_ids())
    assert set(train.episode_ids()) | set(holdout.episode_ids()) == set(range(12))
    for step in range(3):
        assert set(train[step]["episode_index"].tolist()) <= set(train.episode_ids())
        assert set(holdout[step]["episode_index"].tolist()) <= set(holdout.episode_ids())
    with pytest.raises(ValueError, match="'holdout' subset .* is empty"):
        ReplayWindowDataset(tmp_path, 8, 2, subset="holdout", holdout_fraction=0.0).check()
    with pytest.raises(ValueError, match="subset"):
        ReplayWindowDataset(tmp_path, 8, 2, subset="test")


# ----------------------------------------------------------------------------------------------------------------
# recorders
# ----------------------------------------------------------------------------------------------------------------


def test_record_frames_gymnasium_wrapper(tmp_path):
    env = RecordFrames(PaintedEnv(lengths=(3, 5, 2)), tmp_path, chunk_length=4)
    rng = np.random.default_rng(0)
    taken = []
    for _ in range(3):
        env.reset()
        actions, done = [], False
        while not done:
            actions.append(int(rng.integers(4)))
            _, _, terminated, truncated, _ = env.step(actions[-1])
            done = terminated or truncated
        taken.append(actions)
    env.reset()
    env.step(1)
    env.step(2)
    env.close()  # cut mid-episode: stored as truncated

    store = ReplayStore.open(tmp_path)
    assert len(store) == 4 and all(e.complete for e in store.episodes)
    for number, (episode, steps) in enumerate(zip(store.episodes[:3], (3, 5, 2), strict=True)):
        check_recorded_episode(episode, steps, number, tag=0, actions=taken[number])
    check_recorded_episode(store.episodes[3], 2, 3, tag=0, actions=[1, 2], cut=True)


def test_record_frames_from_render_resizes(tmp_path):
    env = RecordFrames(PaintedEnv(lengths=(4,), size=48, image_obs=False, render_mode="rgb_array"), tmp_path)
    assert env.frame_source == "render"
    env.reset()
    for action in range(4):
        env.step(action)
    (episode,) = ReplayStore.open(tmp_path).episodes
    assert episode.frames().shape == (5, 64, 64, 3)
    check_recorded_episode(episode, 4, 0, tag=0, actions=[0, 1, 2, 3])
    assert resize_frames(np.full((2, 30, 40, 3), 77, np.uint8), (64, 64)).shape == (2, 64, 64, 3)


class VecMeanPixel(VecEnvWrapper):
    """Stands in for a context wrapper above the recorder: turns frames into vectors (terminal ones too)."""

    def __init__(self, venv):
        super().__init__(venv, observation_space=gym.spaces.Box(0, 255, (3,), np.float32))

    def reset(self):
        return self.venv.reset().mean(axis=(1, 2)).astype(np.float32)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = (
                    info["terminal_observation"].mean(axis=(0, 1)).astype(np.float32)
                )
        return obs.mean(axis=(1, 2)).astype(np.float32), rewards, dones, infos


def test_vec_record_frames_handles_same_step_autoreset_under_another_wrapper(tmp_path):
    factories = [lambda: PaintedEnv(lengths=(3, 4), tag=0), lambda: PaintedEnv(lengths=(5,), tag=1)]
    recorder = VecRecordFrames(DummyVecEnv(factories), tmp_path, chunk_length=4)
    venv = VecMeanPixel(recorder)
    assert venv.reset().shape == (2, 3)
    rng = np.random.default_rng(0)
    actions = rng.integers(4, size=(14, 2))
    for step_actions in actions:
        obs, _, _, _ = venv.step(step_actions)
        assert obs.shape == (2, 3)  # the wrapper above still sees its own observations
    venv.close()

    store = ReplayStore.open(tmp_path)
    assert not store.recovery_report
    by_env = {0: [], 1: []}
    for episode in store.episodes:
        by_env[int(episode.frames(0, 1)[0, 0, 0, 2])].append(episode)
    # env 0: episodes of 3, 4, 3, 4 steps fill the 14 steps exactly (the 5th, empty one is dropped)
    offsets = np.cumsum([0, 3, 4, 3])
    for number, (episode, steps) in enumerate(zip(by_env[0], (3, 4, 3, 4), strict=True)):
        own = actions[offsets[number] : offsets[number] + steps, 0]
        check_recorded_episode(episode, steps, number, tag=0, actions=own)
    assert len(by_env[0]) == 4
    # env 1: two episodes of 5 steps (terminal frames from terminal_observation), then 4 steps cut by close()
    check_recorded_episode(by_env[1][0], 5, 0, tag=1, actions=actions[0:5, 1])
    check_recorded_episode(by_env[1][1], 5, 1, tag=1, actions=actions[5:10, 1])
    check_recorded_episode(by_env[1][2], 4, 2, tag=1, actions=actions[10:14, 1], cut=True)
    assert len(by_env[1]) == 3


def test_vec_record_frames_rejects_non_image_observations(tmp_path):
    venv = DummyVecEnv([lambda: PaintedEnv(image_obs=False)])
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        VecRecordFrames(venv, tmp_path)
