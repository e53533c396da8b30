"""ReplayStore crash safety and corruption: a SIGKILL loses only the unfinished episode; damaged files are named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from aime_rl.replay import ReplayStore
from tests.helpers import REPO_ROOT
from tests.replay.helpers import encoded_episode, painted_frames, write_encoded_store

CRASH_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import aime_rl.replay.store as store_module
    from aime_rl.replay import ReplayStore
    from tests.replay.helpers import encoded_episode, painted_frames

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
    args = [sys.executable, "-c", CRASH_CHILD, str(directory), mode, str(ready)]
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
