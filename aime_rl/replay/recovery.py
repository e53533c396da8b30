"""Crash recovery for a replay store: what a scan finds besides committed chunks, and what may be cleaned up.

:class:`RecoveryReport` lists stray temporary files, uncommitted ("orphan") files and incomplete episodes; the
helpers here find those files in a store directory, decide which committed chunks of an episode are reachable
(a contiguous run from its first chunk, ending at its last), and delete what a report lists. The rules they
implement are in the "Crash safety" section of :mod:`aime_rl.replay.store`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aime_rl.replay.chunks import _Chunk, _stem_of
from aime_rl.replay.episode import Episode


@dataclass
class RecoveryReport:
    """What a scan of the store found besides committed chunks.

    ``stray_temp_files``: ``.*.tmp`` files of interrupted (or, with a live writer, ongoing) atomic writes. ``orphan_files``: frames/data files without
    a commit marker (a crashed writer's last chunk, or a live writer's chunk being committed). ``incomplete_episodes``:
    keys of episodes whose last chunk was never committed (crashed or still being written); their committed rows are
    kept. ``removed_files``: what ``remove_orphans`` deleted.
    """

    stray_temp_files: list[Path] = field(default_factory=list)
    orphan_files: list[Path] = field(default_factory=list)
    incomplete_episodes: list[str] = field(default_factory=list)
    removed_files: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stray_temp_files or self.orphan_files or self.incomplete_episodes)

    def summary(self) -> str:
        """One line per finding, for logs."""
        lines = [f"stray temporary file (ignored): {p}" for p in self.stray_temp_files]
        lines += [f"uncommitted file (ignored): {p}" for p in self.orphan_files]
        lines += [f"incomplete episode (committed rows kept): {k}" for k in self.incomplete_episodes]
        lines += [f"removed: {p}" for p in self.removed_files]
        return "\n".join(lines) if lines else "nothing to recover"


def stray_temp_files(directory: Path, chunk_dir: Path, chunk_names: Sequence[str]) -> list[Path]:
    """The ``.*.tmp`` files among ``chunk_names`` (the listing of ``chunk_dir``) and in ``directory`` itself."""
    stray = [chunk_dir / n for n in chunk_names if n.startswith(".") and n.endswith(".tmp")]
    stray += [
        directory / n
        for n in (os.listdir(directory) if directory.is_dir() else [])
        if n.startswith(".") and n.endswith(".tmp")
    ]
    return stray


def orphan_files(
    chunk_dir: Path, chunk_names: Sequence[str], committed_stems: set[str | None], unreachable: list[Path]
) -> list[Path]:
    """Chunk files without a commit marker (``committed_stems``: stems that have one), plus the ``unreachable``
    files of committed chunks that no episode can use; sorted."""
    uncommitted = [n for n in chunk_names if _stem_of(n) is not None and _stem_of(n) not in committed_stems]
    return sorted([chunk_dir / n for n in uncommitted if not n.startswith(".")] + unreachable)


def contiguous_prefix(episode: Episode | None, group: list[_Chunk]) -> list[_Chunk]:
    """The chunks of ``group`` (new chunks of one episode, sorted by index) that continue ``episode`` (``None``:
    a new episode) without a gap and not past its last chunk; the rest is damage, not data."""
    expected_index = len(episode.chunks) if episode else 0
    expected_start = len(episode) if episode else 0
    if episode is not None and episode.complete:
        return []
    usable = []
    for chunk in group:
        if chunk.index != expected_index or chunk.start != expected_start:
            break
        usable.append(chunk)
        expected_index, expected_start = expected_index + 1, expected_start + chunk.length
        if chunk.last:
            break
    return usable


def remove_files(paths: Sequence[Path]) -> list[Path]:
    """Delete ``paths``; return those that were deleted (already missing ones are skipped)."""
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
