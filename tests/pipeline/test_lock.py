"""One command at a time per run: a second command on a run in use stops before it reads or writes anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aime_rl.cli import main
from aime_rl.pipeline import RunInUseError, RunLock
from aime_rl.pipeline.lock import LOCK_NAME

COLLECT = ["--collect-steps", "16", "--num-envs", "2", "--frame-size", "32"]
pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the run lock is POSIX flock; Windows takes none"
)


def collect(run, *extra) -> int:
    return main(["collect", "--runs-dir", str(run.parent), "--name", run.name, *COLLECT, *extra])


def test_a_second_lock_on_the_same_run_is_refused_naming_the_holder(tmp_path):
    holder = r"in use by another command \(pid \d+, `aime-rl train-tokenizer`"
    with RunLock(tmp_path, "aime-rl train-tokenizer"), pytest.raises(RunInUseError, match=holder):
        RunLock(tmp_path, "aime-rl collect").acquire()


def test_the_lock_is_free_again_once_released(tmp_path):
    with RunLock(tmp_path, "aime-rl collect") as lock:
        assert lock.held
    assert not lock.held
    with RunLock(tmp_path, "aime-rl collect"):
        pass


def test_a_command_on_a_run_in_use_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    assert collect(run) == 0
    before = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != LOCK_NAME)
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}
    capsys.readouterr()
    with RunLock(run, "aime-rl train-context"):
        code = collect(run, "--collect-steps", "64")  # would top the replay up, were the run free
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "in use" in err and "aime-rl train-context" in err and "Traceback" not in err
    assert sorted(p.relative_to(run) for p in run.rglob("*") if p.name != LOCK_NAME) == before
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = textwrap.dedent(
        f"""
        import os, sys
        from aime_rl.pipeline import RunLock
        RunLock({str(tmp_path)!r}, "aime-rl collect").acquire()
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "held"
        with pytest.raises(RunInUseError, match=f"pid {process.pid}"):
            RunLock(tmp_path, "aime-rl collect").acquire()
    finally:
        process.kill()
        process.wait()
    with RunLock(tmp_path, "aime-rl collect"):
        pass


def test_a_failed_command_on_a_new_run_leaves_no_directories_behind(tmp_path):
    runs = tmp_path / "a" / "b"
    assert main(["collect", "--runs-dir", str(runs), "--name", "r", *COLLECT, "--num-envs", "0"]) == 2
    assert list(tmp_path.iterdir()) == []
