"""One command at a time per run directory.

Two commands on one run would interleave their writes: two ``collect`` runs append to the same replay, a
``train-context`` reads a tokenizer that a ``train-tokenizer --restart`` is replacing, and the last manifest written
wins. So every command holds an exclusive lock on ``runs/<name>/.lock`` while it reads and writes the run; a second
command on the same run stops at once with :class:`RunInUseError`, naming the command that holds it.

The lock is an advisory ``flock`` held through an open file: the operating system releases it when the holder
exits, however it exits (a killed run never leaves a stale lock behind). The file itself stays, with the last
holder's pid and command in it, which only the error message reads. On a platform without ``fcntl`` (Windows) no
lock is taken.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunInUseError", "RunLock"]

LOCK_NAME = ".lock"


class RunInUseError(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive, non-blocking lock on ``run_dir/.lock``, held from :meth:`acquire` to :meth:`release`.

    ``command`` is what a second command's error message shows (e.g. ``"aime-rl train-tokenizer"``). Usable as a
    context manager. ``run_dir`` must exist.
    """

    def __init__(self, run_dir: str | os.PathLike, command: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunInUseError` at once if another process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUseError(
                    f"run {self.path.parent.name!r} is in use by another command ({holder}); wait for it to end, "
                    f"stop it, or use another --name"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')} {self.command}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases it); a no-op when not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """``"pid P, `COMMAND` since TIME"`` from the lock file's line, or a plain phrase when it cannot be read."""
    try:
        line = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        pid, day, clock, command = line.split(" ", 3)
        return f"pid {int(pid)}, `{command}` since {day} {clock}"
    except (OSError, ValueError):
        return "a process that did not say which"
