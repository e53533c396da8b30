"""On-disk, append-only, crash-safe episode store with lazy (memory-mapped) frames.

Step convention
---------------
An episode with ``n`` environment steps is stored as ``n + 1`` *rows*. Row ``t < n`` holds

* ``frames[t]``      the observation frame ``o_t`` (uint8 ``[H, W, 3]`` at model resolution),
* ``actions[t]``     the action ``a_t`` taken after seeing ``o_t``,
* ``rewards[t]``     the reward ``r_{t+1}`` produced by ``a_t``,
* ``terminated[t]``, ``truncated[t]``  the flags produced by ``a_t``.

The last row ``n`` holds the final observation ``o_n`` with a dummy action (zeros), reward 0 and the flags of the
step that ended the episode (so ``terminated[n]`` says "``o_n`` is a terminal state"). Samples carry ``is_last``
to mask that dummy action. The gymnasium loop that produces this is::

    obs, _ = env.reset()
    episode = store.begin_episode()
    while True:
        action = policy(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        episode.add(obs, action, reward, terminated, truncated)
        obs = next_obs
        if terminated or truncated:
            episode.finish(obs)  # the final-observation row
            break

One exception: an episode finished with ``finish(None)`` (its final observation is unknown, e.g. SB3's
``get_images()`` after autoreset) has no final-observation row; its last row is a real step
(``Episode.has_final_observation`` is False) and ``is_last`` marks that row.

Layout
------
::

    directory/meta.json                          frame shape, action shape and dtype (atomic JSON)
    directory/chunks/<episode>-c<k>.frames.npy   uint8 [rows, H, W, 3], memory-mapped on read
    directory/chunks/<episode>-c<k>.data.npz     actions, rewards, terminated, truncated (uncompressed)
    directory/chunks/<episode>-c<k>.commit.json  commit marker: rows, offset, sizes, CRC32s, "last chunk?"

An episode is written in chunks of at most ``chunk_length`` rows; a short episode is one chunk. Episode keys are
``<writer token>-<sequence number>``; every ``ReplayStore`` opened for writing draws a random token, so several
writers (e.g. one ``RecordFrames`` per ``SubprocVecEnv`` worker) can share a directory without coordination.
Episode *indices* (``store.episodes[i].index``) follow the commit time of each episode's first chunk; they are
stable for the lifetime of a store object and equal across processes that open the same files.

Crash safety
------------
Every file is written by :func:`aime_rl.utils.io.atomic_write` (temporary file in the same directory, fsync,
rename, fsync of the directory), and a chunk's files are written in the order frames, data, commit marker. The
loader only looks at chunks whose commit marker exists, so

* a crash before the marker's rename leaves at most stray ``.*.tmp`` files and frames/data files without a marker
  ("orphans"); both are ignored, reported in :attr:`ReplayStore.recovery_report` and logged, and deleted only on
  request (``remove_orphans=True`` / :meth:`ReplayStore.remove_orphans`, safe only while no writer is running,
  because a live writer's pending chunk looks the same);
* a marker is renamed into place only after both data files are complete and durable, so a committed chunk is
  never truncated by a crash, and files of earlier chunks and episodes are never touched again.

A crash therefore loses only the rows of the unfinished episode that were not yet in a committed chunk. The
committed chunks of an unfinished episode are kept as an *incomplete* episode (``Episode.complete`` is False, no
final-observation row), listed in the recovery report and sampled like any other data.

Corruption
----------
Damage the writer cannot produce (a truncated, overwritten or deleted committed file) raises ``ValueError``
naming the file: at open/refresh for a missing or unparseable marker, a missing file, a size different from the
marker's, a bad ``.npy`` header or a bad ``.npz`` (the small arrays are read eagerly); at sampling time if a
frames file vanished or changed after the store was opened. Pixel damage that keeps the size is found only by
:meth:`ReplayStore.verify`, which checks the CRC32 of every committed file (it reads the whole store).
Nothing is ever loaded with ``allow_pickle=True``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import uuid
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aime_rl.utils.io import atomic_write, atomic_write_json, read_json

logger = logging.getLogger(__name__)

FORMAT_NAME = "aime_rl.replay"
FORMAT_VERSION = 1
META_NAME = "meta.json"
CHUNK_DIR = "chunks"
FRAMES_SUFFIX = ".frames.npy"
DATA_SUFFIX = ".data.npz"
COMMIT_SUFFIX = ".commit.json"
DATA_KEYS = ("actions", "rewards", "terminated", "truncated")
DEFAULT_FRAME_SHAPE = (64, 64, 3)


# ----------------------------------------------------------------------------------------------------------------
# small records
# ----------------------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Chunk:
    """One committed chunk, as described by its commit marker."""

    stem: str
    directory: Path
    episode_key: str
    index: int
    start: int
    length: int
    last: bool
    final_observation: bool
    committed_ns: int
    files: dict[str, dict[str, int]]

    @property
    def frames_path(self) -> Path:
        return self.directory / (self.stem + FRAMES_SUFFIX)

    @property
    def data_path(self) -> Path:
        return self.directory / (self.stem + DATA_SUFFIX)

    @property
    def marker_path(self) -> Path:
        return self.directory / (self.stem + COMMIT_SUFFIX)


def _chunk_stem(episode_key: str, chunk_index: int) -> str:
    return f"{episode_key}-c{chunk_index:05d}"


def _stem_of(name: str) -> str | None:
    for suffix in (FRAMES_SUFFIX, DATA_SUFFIX, COMMIT_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _normalize_action_dtype(dtype: Any) -> np.dtype:
    """Integer/bool actions are stored as int64, floating ones as float32."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        return np.dtype(np.int64)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    raise ValueError(f"actions must be integer or floating point, got dtype {dtype}")


def _check_frame_shape(frame_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in frame_shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape) <= 0:
        raise ValueError(f"frame_shape must be (H, W, 3), got {tuple(frame_shape)}")
    return shape  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# episodes (read side)
# ----------------------------------------------------------------------------------------------------------------


class Episode:
    """A stored episode: small arrays in RAM, frames memory-mapped on demand.

    Arrays have one entry per row (see the module docstring): ``actions [L, *action_shape]``, ``rewards [L]``
    float32, ``terminated [L]`` / ``truncated [L]`` bool, with ``L = len(episode)``.
    """

    def __init__(self, store: ReplayStore, key: str, index: int):
        self._store = store
        self.key = key
        self.index = index
        self.chunks: list[_Chunk] = []
        self._chunk_starts = np.zeros(0, dtype=np.int64)
        self.actions = np.zeros(0)
        self.rewards = np.zeros(0, dtype=np.float32)
        self.terminated = np.zeros(0, dtype=bool)
        self.truncated = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return f"Episode(index={self.index}, key={self.key!r}, rows={len(self)}, complete={self.complete})"

    @property
    def complete(self) -> bool:
        """True when the episode's last chunk was committed (``finish`` ran)."""
        return bool(self.chunks) and self.chunks[-1].last

    @property
    def has_final_observation(self) -> bool:
        """True when the last row is the final observation with a dummy action."""
        return self.complete and self.chunks[-1].final_observation

    @property
    def num_steps(self) -> int:
        """Environment steps (rows with a real action)."""
        return len(self) - int(self.has_final_observation)

    @property
    def committed_ns(self) -> int:
        return self.chunks[0].committed_ns

    def _append_chunks(self, chunks: list[_Chunk], arrays: list[dict[str, np.ndarray]]) -> None:
        self.chunks.extend(chunks)
        self._chunk_starts = np.array([c.start for c in self.chunks], dtype=np.int64)
        for name in DATA_KEYS:
            parts = [getattr(self, name)] if len(self) else []
            setattr(self, name, np.concatenate(parts + [a[name] for a in arrays]))

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames of rows ``start:stop`` as uint8 ``[n, H, W, 3]``.

        A memory-mapped view (``np.memmap``) when the rows lie in one chunk, else a concatenated copy.
        """
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"rows {start}:{stop} out of range for episode {self.key} with {len(self)} rows")
        pieces = [frames[lo:hi] for frames, lo, hi in self._chunk_slices(start, stop)]
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros((0, *self._store.frame_shape), np.uint8)

    def copy_frames_chw(self, start: int, out: np.ndarray) -> None:
        """Copy rows ``start : start + len(out)`` into ``out`` uint8 ``[n, 3, H, W]`` (channels-first)."""
        offset = 0
        for frames, lo, hi in self._chunk_slices(start, start + len(out)):
            out[offset : offset + hi - lo] = frames[lo:hi].transpose(0, 3, 1, 2)
            offset += hi - lo

    def _chunk_slices(self, start: int, stop: int):
        """Yield ``(chunk frames memmap, lo, hi)`` covering rows ``start:stop``."""
        first = int(np.searchsorted(self._chunk_starts, start, side="right")) - 1
        for chunk in self.chunks[max(first, 0) :]:
            if chunk.start >= stop:
                break
            lo, hi = (
                max(start, chunk.start) - chunk.start,
                min(stop, chunk.start + chunk.length) - chunk.start,
            )
            if hi > lo:
                yield self._store._open_frames(chunk), lo, hi


# ----------------------------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------------------------


class ReplayStore:
    """Append-only episode store on disk.

    Args:
        directory: store directory (created when writable).
        frame_shape: ``(H, W, 3)`` of stored frames. ``None``: take it from ``meta.json``, or ``(64, 64, 3)`` for a
            new store. A value that disagrees with an existing store raises ``ValueError``.
        chunk_length: rows per file for long episodes (this writer's setting; readers accept any).
        action_shape, action_dtype: declare the action format up front; otherwise it is inferred from the first
            ``add`` (integers → int64, floats → float32) and saved in ``meta.json``.
        read_only: open for sampling only (see :meth:`open`); no file is created or changed.
        remove_orphans: delete stray temp files and uncommitted files found at open (only when no writer is live).
        max_open_files: frames files kept memory-mapped at once (least recently used are closed).
        writer_token: prefix of the keys of the episodes this instance writes (default: random). A fixed, fresh
            token makes the keys, and so the held-out split (a hash of the key), the same in every rerun.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        frame_shape: Sequence[int] | None = None,
        chunk_length: int = 1000,
        action_shape: Sequence[int] | None = None,
        action_dtype: Any = None,
        *,
        read_only: bool = False,
        remove_orphans: bool = False,
        max_open_files: int = 256,
        writer_token: str | None = None,
    ):
        if chunk_length < 1:
            raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")
        self.directory = Path(directory)
        self.chunk_dir = self.directory / CHUNK_DIR
        self.chunk_length = int(chunk_length)
        self.read_only = read_only
        self.max_open_files = int(max_open_files)
        self.episodes: list[Episode] = []
        self._episodes_by_key: dict[str, Episode] = {}
        self._known_stems: set[str] = set()
        self._memmaps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._writer_token = self._check_writer_token(writer_token) if writer_token else uuid.uuid4().hex[:12]
        self._next_sequence = 0
        self.recovery_report = RecoveryReport()
        self._init_meta(frame_shape, action_shape, action_dtype)
        self.refresh()
        if remove_orphans:
            self.remove_orphans()
        if self.recovery_report:
            logger.warning("replay store %s recovery:\n%s", self.directory, self.recovery_report.summary())

    def _check_writer_token(self, token: str) -> str:
        """A caller-chosen prefix of the episode keys (deterministic keys, hence a deterministic held-out split);
        it must be new to this store, or two writers would share keys."""
        if not token.replace("_", "").isalnum():
            raise ValueError(f"writer_token must be letters, digits and '_', got {token!r}")
        if self.chunk_dir.is_dir() and any(p.name.startswith(f"{token}-") for p in self.chunk_dir.iterdir()):
            raise ValueError(f"writer_token {token!r} was already used in {self.directory}")
        return token

    @classmethod
    def open(cls, directory: str | os.PathLike, **kwargs: Any) -> ReplayStore:
        """Open an existing store read-only; ``ValueError`` when ``directory`` holds no ``meta.json``."""
        if not (Path(directory) / META_NAME).is_file():
            raise ValueError(f"not a replay store (no {META_NAME}): {directory}")
        return cls(directory, read_only=True, **kwargs)

    # -- metadata ------------------------------------------------------------------------------------------------

    def _init_meta(self, frame_shape, action_shape, action_dtype) -> None:
        meta_path = self.directory / META_NAME
        meta = read_json(meta_path) if meta_path.exists() else None
        if meta is not None and meta.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{meta_path} is not a replay store metadata file (format={meta.get('format')!r})"
            )
        if meta is not None and meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path} has replay format version {meta.get('version')!r}; this aime_rl reads version "
                f"{FORMAT_VERSION} only (written by another aime_rl version?)"
            )
        try:
            stored_shape = _check_frame_shape(meta["frame_shape"]) if meta else None
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"corrupted metadata file {meta_path}: {err!r}") from err
        requested = _check_frame_shape(frame_shape) if frame_shape is not None else None
        if stored_shape is not None and requested is not None and stored_shape != requested:
            raise ValueError(
                f"store {self.directory} holds frames {stored_shape}, requested frame_shape {requested}"
            )
        self.frame_shape = stored_shape or requested or DEFAULT_FRAME_SHAPE
        self.action_shape: tuple[int, ...] | None = None
        self.action_dtype: np.dtype | None = None
        if meta is not None and meta.get("action_shape") is not None:
            self.action_shape = tuple(meta["action_shape"])
            self.action_dtype = np.dtype(meta["action_dtype"])
        if action_shape is not None or action_dtype is not None:
            if action_shape is None or action_dtype is None:
                raise ValueError("declare both action_shape and action_dtype, or neither")
            self._set_action_spec(tuple(int(s) for s in action_shape), _normalize_action_dtype(action_dtype))
        if meta is None and not self.read_only:
            self._write_meta()

    def _set_action_spec(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if self.action_shape is not None and (self.action_shape, self.action_dtype) != (shape, dtype):
            raise ValueError(
                f"store {self.directory} holds actions of shape {self.action_shape} dtype {self.action_dtype}, "
                f"got shape {shape} dtype {dtype}"
            )
        if self.action_shape is None:
            self.action_shape, self.action_dtype = shape, dtype
            if not self.read_only:
                self._write_meta()

    def _write_meta(self) -> None:
        meta_path = self.directory / META_NAME
        if meta_path.exists():  # another writer may have declared the actions meanwhile
            other = read_json(meta_path)
            if other.get("action_shape") is not None and self.action_shape is not None:
                theirs = (tuple(other["action_shape"]), np.dtype(other["action_dtype"]))
                if theirs != (self.action_shape, self.action_dtype):
                    raise ValueError(
                        f"{meta_path} declares actions {theirs}, this writer has {self.action_shape}"
                    )
        atomic_write_json(
            meta_path,
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "frame_shape": list(self.frame_shape),
                "action_shape": None if self.action_shape is None else list(self.action_shape),
                "action_dtype": None if self.action_dtype is None else self.action_dtype.name,
            },
        )

    # -- reading -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"ReplayStore({str(self.directory)!r}, episodes={len(self)}, rows={self.num_rows})"

    @property
    def num_rows(self) -> int:
        """Stored rows in all episodes (steps plus final-observation rows)."""
        return sum(len(e) for e in self.episodes)

    @property
    def num_steps(self) -> int:
        """Stored environment steps in all episodes."""
        return sum(e.num_steps for e in self.episodes)

    def refresh(self) -> int:
        """Pick up chunks committed since the last scan (by any writer); return the number of new rows.

        Also recomputes :attr:`recovery_report`. New episodes get the next indices; existing ones only grow.
        """
        self._reload_action_spec()
        names = sorted(os.listdir(self.chunk_dir)) if self.chunk_dir.is_dir() else []
        report = RecoveryReport(removed_files=list(self.recovery_report.removed_files))
        report.stray_temp_files = [
            self.chunk_dir / n for n in names if n.startswith(".") and n.endswith(".tmp")
        ]
        report.stray_temp_files += [
            self.directory / n
            for n in (os.listdir(self.directory) if self.directory.is_dir() else [])
            if n.startswith(".") and n.endswith(".tmp")
        ]
        stems = {_stem_of(n) for n in names if n.endswith(COMMIT_SUFFIX)}
        new_chunks = [self._read_marker(s) for s in sorted(stems - self._known_stems)]
        added_rows, unreachable = self._attach_chunks(new_chunks)
        uncommitted = [n for n in names if _stem_of(n) is not None and _stem_of(n) not in stems]
        report.orphan_files = sorted(
            [self.chunk_dir / n for n in uncommitted if not n.startswith(".")] + unreachable
        )
        report.incomplete_episodes = [e.key for e in self.episodes if not e.complete]
        self.recovery_report = report
        return added_rows

    def _reload_action_spec(self) -> None:
        """Adopt the action format another writer declared after this store was opened."""
        meta_path = self.directory / META_NAME
        if self.action_shape is None and meta_path.is_file():
            meta = read_json(meta_path)
            if meta.get("action_shape") is not None:
                self.action_shape = tuple(meta["action_shape"])
                self.action_dtype = np.dtype(meta["action_dtype"])

    def _read_marker(self, stem: str) -> _Chunk:
        path = self.chunk_dir / (stem + COMMIT_SUFFIX)
        marker = read_json(path)
        try:
            chunk = _Chunk(
                stem=stem,
                directory=self.chunk_dir,
                episode_key=str(marker["episode"]),
                index=int(marker["chunk"]),
                start=int(marker["start"]),
                length=int(marker["length"]),
                last=bool(marker["last"]),
                final_observation=bool(marker["final_observation"]),
                committed_ns=int(marker["committed_ns"]),
                files={
                    k: {"bytes": int(v["bytes"]), "crc32": int(v["crc32"])}
                    for k, v in marker["files"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"corrupted commit marker {path}: {err!r}") from err
        if chunk.length < 1 or chunk.start < 0 or set(chunk.files) != {"frames", "data"}:
            raise ValueError(f"corrupted commit marker {path}: inconsistent fields")
        return chunk

    def _attach_chunks(self, chunks: list[_Chunk]) -> tuple[int, list[Path]]:
        """Validate new chunks and append them to their episodes; return (rows added, unreachable files)."""
        by_episode: dict[str, list[_Chunk]] = {}
        for chunk in chunks:
            by_episode.setdefault(chunk.episode_key, []).append(chunk)
        new_episodes, added_rows, unreachable = [], 0, []
        for key, group in by_episode.items():
            episode = self._episodes_by_key.get(key)
            group.sort(key=lambda c: c.index)
            usable = self._contiguous_prefix(episode, group)
            for chunk in group[len(usable) :]:  # after a gap or after the last chunk: damage, not data
                unreachable += [chunk.marker_path, chunk.frames_path, chunk.data_path]
            if not usable:
                continue
            arrays = [self._validate_chunk(c) for c in usable]
            if episode is None:
                episode = Episode(self, key, index=-1)
                new_episodes.append(episode)
            episode._append_chunks(usable, arrays)
            self._known_stems.update(c.stem for c in usable)
            added_rows += sum(c.length for c in usable)
        new_episodes.sort(key=lambda e: (e.committed_ns, e.key))
        for episode in new_episodes:
            episode.index = len(self.episodes)
            self.episodes.append(episode)
            self._episodes_by_key[episode.key] = episode
        return added_rows, unreachable

    @staticmethod
    def _contiguous_prefix(episode: Episode | None, group: list[_Chunk]) -> list[_Chunk]:
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

    def _validate_chunk(self, chunk: _Chunk) -> dict[str, np.ndarray]:
        """Check sizes and headers of a chunk's files; return its small arrays. ``ValueError`` names the file."""
        for kind, path in (("frames", chunk.frames_path), ("data", chunk.data_path)):
            if not path.is_file():
                raise ValueError(f"missing file {path} (committed by {chunk.marker_path.name})")
            size = path.stat().st_size
            if size != chunk.files[kind]["bytes"]:
                raise ValueError(
                    f"corrupted file {path}: {size} bytes, commit marker says {chunk.files[kind]['bytes']}"
                )
        self._check_frames_header(chunk)
        return self._load_data(chunk)

    def _check_frames_header(self, chunk: _Chunk) -> None:
        path = chunk.frames_path
        expected = (chunk.length, *self.frame_shape)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = reader(f)
                offset = f.tell()
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise ValueError(f"corrupted frames file {path}: {err}") from err
        if shape != expected or dtype != np.uint8 or fortran_order:
            raise ValueError(
                f"corrupted frames file {path}: holds {dtype} {shape}, expected uint8 {expected}"
            )
        if path.stat().st_size != offset + int(np.prod(shape)):
            raise ValueError(f"corrupted frames file {path}: size does not match its header")

    def _load_data(self, chunk: _Chunk) -> dict[str, np.ndarray]:
        path = chunk.data_path
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in DATA_KEYS}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(f"corrupted data file {path}: {err!r}") from err
        problems = [
            f"{n} has {len(a)} rows" for n, a in arrays.items() if a.ndim < 1 or len(a) != chunk.length
        ]
        if self.action_shape is not None and arrays["actions"].shape[1:] != self.action_shape:
            problems.append(f"actions shape {arrays['actions'].shape[1:]} != store's {self.action_shape}")
        if problems:
            raise ValueError(
                f"corrupted data file {path}: {'; '.join(problems)} (expected {chunk.length} rows)"
            )
        return {
            "actions": arrays["actions"],
            "rewards": arrays["rewards"].astype(np.float32, copy=False),
            "terminated": arrays["terminated"].astype(bool, copy=False),
            "truncated": arrays["truncated"].astype(bool, copy=False),
        }

    def _open_frames(self, chunk: _Chunk) -> np.ndarray:
        """Memory-map a chunk's frames (LRU-cached); ``ValueError`` naming the file when it changed or vanished."""
        frames = self._memmaps.get(chunk.stem)
        if frames is not None:
            self._memmaps.move_to_end(chunk.stem)
            return frames
        path = chunk.frames_path
        try:
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"corrupted frames file {path}: {err}") from err
        if frames.shape != (chunk.length, *self.frame_shape) or frames.dtype != np.uint8:
            raise ValueError(f"corrupted frames file {path}: holds {frames.dtype} {frames.shape}")
        self._memmaps[chunk.stem] = frames
        while len(self._memmaps) > self.max_open_files:
            self._memmaps.popitem(last=False)
        return frames

    def verify(self) -> None:
        """Read every committed file and check its CRC32; ``ValueError`` names the first damaged file."""
        for episode in self.episodes:
            for chunk in episode.chunks:
                for kind, path in (("frames", chunk.frames_path), ("data", chunk.data_path)):
                    crc = 0
                    with open(path, "rb") as f:
                        while block := f.read(1 << 22):
                            crc = zlib.crc32(block, crc)
                    if crc != chunk.files[kind]["crc32"]:
                        raise ValueError(
                            f"corrupted file {path}: CRC32 mismatch with {chunk.marker_path.name}"
                        )

    def remove_orphans(self) -> list[Path]:
        """Delete the stray temp files and uncommitted files of the last scan. Only safe with no live writer."""
        removed = []
        for path in self.recovery_report.stray_temp_files + self.recovery_report.orphan_files:
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
        self.recovery_report.removed_files += removed
        self.recovery_report.stray_temp_files, self.recovery_report.orphan_files = [], []
        return removed

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmaps"] = OrderedDict()  # memory maps are reopened lazily in the receiving process
        return state

    # -- sampling ------------------------------------------------------------------------------------------------

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

    # -- writing -------------------------------------------------------------------------------------------------

    def begin_episode(self) -> EpisodeWriter:
        """Start a new episode; any number may be in progress at once (one per sub-env)."""
        if self.read_only:
            raise ValueError(f"replay store {self.directory} was opened read-only")
        key = f"{self._writer_token}-{self._next_sequence:06d}"
        self._next_sequence += 1
        return EpisodeWriter(self, key)

    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> str:
        """Write a whole episode: ``frames [n + 1, H, W, 3]`` (with the final observation), ``actions [n, ...]``,
        ``rewards``/``terminated``/``truncated`` ``[n]``. Returns the episode key."""
        n = len(actions)
        if len(frames) != n + 1 or not len(rewards) == len(terminated) == len(truncated) == n:
            raise ValueError(
                f"add_episode needs frames [n + 1] and actions/rewards/terminated/truncated [n], got "
                f"{len(frames)}, {n}, {len(rewards)}, {len(terminated)}, {len(truncated)}"
            )
        writer = self.begin_episode()
        for t in range(n):
            writer.add(frames[t], actions[t], rewards[t], terminated[t], truncated[t])
        return writer.finish(frames[n])

    def _coerce_action(self, action: Any) -> np.ndarray:
        array = np.asarray(action)
        if self.action_shape is None:
            self._set_action_spec(array.shape, _normalize_action_dtype(array.dtype))
        if array.shape != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape}, got {array.shape}")
        if not np.can_cast(array.dtype, self.action_dtype, casting="same_kind"):
            raise ValueError(f"action must be castable to {self.action_dtype}, got dtype {array.dtype}")
        return array.astype(self.action_dtype)

    def _coerce_frame(self, frame: Any) -> np.ndarray:
        array = np.asarray(frame)
        if array.dtype != np.uint8 or array.shape != self.frame_shape:
            raise ValueError(
                f"frame must be uint8 {self.frame_shape} (resize before storing), got {array.dtype} {array.shape}"
            )
        return array.copy()

    def _commit_chunk(
        self, key: str, index: int, start: int, rows: dict[str, np.ndarray], last: bool, final: bool
    ):
        """Write frames, then data, then the commit marker (see the module docstring); register the chunk."""
        stem = _chunk_stem(key, index)
        frames_info = _write_bytes(self.chunk_dir / (stem + FRAMES_SUFFIX), _npy_bytes(rows["frames"]))
        data_info = _write_bytes(self.chunk_dir / (stem + DATA_SUFFIX), _npz_bytes(rows))
        marker = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "episode": key,
            "chunk": index,
            "start": start,
            "length": len(rows["frames"]),
            "last": last,
            "final_observation": final,
            "committed_ns": time.time_ns(),
            "files": {"frames": frames_info, "data": data_info},
        }
        atomic_write_json(self.chunk_dir / (stem + COMMIT_SUFFIX), marker)
        chunk = self._read_marker(stem)
        self._attach_chunks([chunk])
        self.recovery_report.incomplete_episodes = [e.key for e in self.episodes if not e.complete]


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(rows: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: rows[name] for name in DATA_KEYS})
    return buffer.getvalue()


def _write_bytes(path: Path, payload: bytes) -> dict[str, int]:
    """Atomically write ``payload``; return its size and CRC32 for the commit marker."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(payload)

    atomic_write(path, write)
    return {"bytes": len(payload), "crc32": zlib.crc32(payload)}


# ----------------------------------------------------------------------------------------------------------------
# episodes (write side)
# ----------------------------------------------------------------------------------------------------------------


class EpisodeWriter:
    """Buffers one episode's rows and commits them in chunks of ``store.chunk_length`` rows.

    ``add(frame, action, reward, terminated, truncated)`` appends row ``t`` (see the module docstring);
    ``finish(final_frame)`` appends the final-observation row and commits the rest. Until ``finish``, the rows not
    yet in a full chunk live only in memory: a crash loses them, nothing else.
    """

    def __init__(self, store: ReplayStore, key: str):
        self.store = store
        self.key = key
        self.num_steps = 0
        self.closed = False
        self._rows: list[tuple[np.ndarray, np.ndarray, float, bool, bool]] = []
        self._committed_rows = 0
        self._committed_chunks = 0
        self._ended = False

    def __repr__(self) -> str:
        return f"EpisodeWriter(key={self.key!r}, steps={self.num_steps}, closed={self.closed})"

    def add(self, frame: np.ndarray, action: Any, reward: float, terminated: bool, truncated: bool) -> None:
        """Append one step: frame ``o_t`` uint8 ``[H, W, 3]``, action ``a_t``, reward ``r_{t+1}`` and flags."""
        self._check_open()
        if self._ended:
            raise ValueError(f"episode {self.key} already terminated/truncated; call finish(final_frame)")
        row = (self.store._coerce_frame(frame), self.store._coerce_action(action), float(reward))
        if len(self._rows) == self.store.chunk_length:
            self._commit(last=False, final=False)
        self._rows.append((*row, bool(terminated), bool(truncated)))
        self.num_steps += 1
        self._ended = bool(terminated) or bool(truncated)

    def finish(self, final_frame: np.ndarray | None, *, mark_truncated: bool = False) -> str:
        """Append the final observation ``o_n`` (``None``: unknown, no final row) and commit; return the key.

        ``mark_truncated=True`` sets ``truncated`` on the last step: use it when recording stops mid-episode.
        """
        self._check_open()
        if self.num_steps == 0:
            raise ValueError(f"episode {self.key} has no steps; use abandon()")
        frame = None if final_frame is None else self.store._coerce_frame(final_frame)
        if mark_truncated and not self._ended:
            _, _, _, terminated, _ = self._rows[-1]
            self._rows[-1] = (*self._rows[-1][:3], terminated, True)
        last_flags = self._rows[-1][3:]
        if frame is not None:
            if len(self._rows) == self.store.chunk_length:
                self._commit(last=False, final=False)
            zeros = np.zeros(self.store.action_shape, dtype=self.store.action_dtype)
            self._rows.append((frame, zeros, 0.0, *last_flags))
        self._commit(last=True, final=frame is not None)
        self.closed = True
        return self.key

    def abandon(self) -> None:
        """Drop the rows not yet committed. Chunks already committed stay, as an incomplete episode."""
        self._rows = []
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"episode {self.key} is already finished")

    def _commit(self, last: bool, final: bool) -> None:
        frames, actions, rewards, terminated, truncated = zip(*self._rows, strict=True)
        rows = {
            "frames": np.stack(frames),
            "actions": np.stack(actions),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
        }
        self.store._commit_chunk(self.key, self._committed_chunks, self._committed_rows, rows, last, final)
        self._committed_chunks += 1
        self._committed_rows += len(self._rows)
        self._rows = []
