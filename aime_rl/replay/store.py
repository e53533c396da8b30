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

Code
----
This module holds :class:`ReplayStore` (opening, scanning, writing). The file format and its checks are in
:mod:`aime_rl.replay.chunks`, :class:`Episode` and :class:`EpisodeWriter` in :mod:`aime_rl.replay.episode`,
:class:`RecoveryReport` and the rules for orphans and unreachable chunks in :mod:`aime_rl.replay.recovery`, and
window sampling (inherited by :class:`ReplayStore`) in :mod:`aime_rl.replay.sampling`. Every name that was
defined here before that split is still importable from here.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The ``X as X`` imports re-export names that used to be defined here and that this module no longer uses itself.
from aime_rl.replay.chunks import (
    CHUNK_DIR,
    COMMIT_SUFFIX,
    DATA_SUFFIX,
    DEFAULT_FRAME_SHAPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAMES_SUFFIX,
    META_NAME,
    _check_frame_shape,
    _Chunk,
    _chunk_stem,
    _normalize_action_dtype,
    _npy_bytes,
    _npz_bytes,
    _stem_of,
    load_frames,
    read_marker,
    read_meta,
    validate_chunk,
    verify_chunk,
    write_meta,
)
from aime_rl.replay.chunks import DATA_KEYS as DATA_KEYS
from aime_rl.replay.episode import Episode, EpisodeWriter
from aime_rl.replay.recovery import (
    RecoveryReport,
    contiguous_prefix,
    orphan_files,
    remove_files,
    stray_temp_files,
)
from aime_rl.replay.sampling import WindowSampler
from aime_rl.replay.sampling import _unit_hash as _unit_hash
from aime_rl.utils.io import atomic_write, atomic_write_json, read_json

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------------------------


class ReplayStore(WindowSampler):
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

    The sampling methods (``split``, ``window_weights``, ``sample_windows``, ``sample_window_starts``,
    ``read_windows``) are inherited from :class:`~aime_rl.replay.sampling.WindowSampler`.

    Example (one 5-step episode, stored as 6 rows, then read back as windows):

    >>> import tempfile
    >>> import numpy as np
    >>> from aime_rl.replay import ReplayStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = ReplayStore(tmp.name, frame_shape=(64, 64, 3))
    >>> episode = store.begin_episode()
    >>> for t in range(5):  # frame o_t, action a_t, reward r_{t+1}, terminated, truncated
    ...     episode.add(np.zeros((64, 64, 3), np.uint8), 1, 0.0, False, t == 4)
    >>> key = episode.finish(np.zeros((64, 64, 3), np.uint8))  # the final observation o_5
    >>> batch = ReplayStore.open(tmp.name).sample_windows(batch_size=2, length=4, rng=0)
    >>> batch["frames"].shape, batch["actions"].dtype, len(store), store.num_steps
    (torch.Size([2, 4, 3, 64, 64]), torch.int64, 1, 5)
    >>> tmp.cleanup()
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
        meta = read_meta(meta_path)
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
        write_meta(self.directory / META_NAME, self.frame_shape, self.action_shape, self.action_dtype)

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
        report.stray_temp_files = stray_temp_files(self.directory, self.chunk_dir, names)
        stems = {_stem_of(n) for n in names if n.endswith(COMMIT_SUFFIX)}
        new_chunks = [read_marker(self.chunk_dir, s) for s in sorted(stems - self._known_stems)]
        added_rows, unreachable = self._attach_chunks(new_chunks)
        report.orphan_files = orphan_files(self.chunk_dir, names, stems, unreachable)
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

    def _attach_chunks(self, chunks: list[_Chunk]) -> tuple[int, list[Path]]:
        """Validate new chunks and append them to their episodes; return (rows added, unreachable files)."""
        by_episode: dict[str, list[_Chunk]] = {}
        for chunk in chunks:
            by_episode.setdefault(chunk.episode_key, []).append(chunk)
        new_episodes, added_rows, unreachable = [], 0, []
        for key, group in by_episode.items():
            episode = self._episodes_by_key.get(key)
            group.sort(key=lambda c: c.index)
            usable = contiguous_prefix(episode, group)
            for chunk in group[len(usable) :]:  # after a gap or after the last chunk: damage, not data
                unreachable += [chunk.marker_path, chunk.frames_path, chunk.data_path]
            if not usable:
                continue
            arrays = [validate_chunk(c, self.frame_shape, self.action_shape) for c in usable]
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

    def _open_frames(self, chunk: _Chunk) -> np.ndarray:
        """Memory-map a chunk's frames (LRU-cached); ``ValueError`` naming the file when it changed or vanished."""
        frames = self._memmaps.get(chunk.stem)
        if frames is not None:
            self._memmaps.move_to_end(chunk.stem)
            return frames
        frames = load_frames(chunk, self.frame_shape)
        self._memmaps[chunk.stem] = frames
        while len(self._memmaps) > self.max_open_files:
            self._memmaps.popitem(last=False)
        return frames

    def verify(self) -> None:
        """Read every committed file and check its CRC32; ``ValueError`` names the first damaged file."""
        for episode in self.episodes:
            for chunk in episode.chunks:
                verify_chunk(chunk)

    def remove_orphans(self) -> list[Path]:
        """Delete the stray temp files and uncommitted files of the last scan. Only safe with no live writer."""
        removed = remove_files(self.recovery_report.stray_temp_files + self.recovery_report.orphan_files)
        self.recovery_report.removed_files += removed
        self.recovery_report.stray_temp_files, self.recovery_report.orphan_files = [], []
        return removed

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmaps"] = OrderedDict()  # memory maps are reopened lazily in the receiving process
        return state

    # -- sampling: inherited from WindowSampler (aime_rl/replay/sampling.py) ---------------------------------

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
        chunk = read_marker(self.chunk_dir, stem)
        self._attach_chunks([chunk])
        self.recovery_report.incomplete_episodes = [e.key for e in self.episodes if not e.complete]


# Kept here, beside ``_commit_chunk``, so that ``atomic_write`` is looked up in this module: the crash tests replace
# ``aime_rl.replay.store.atomic_write`` to interrupt a chunk write half-way.
def _write_bytes(path: Path, payload: bytes) -> dict[str, int]:
    """Atomically write ``payload``; return its size and CRC32 for the commit marker."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(payload)

    atomic_write(path, write)
    return {"bytes": len(payload), "crc32": zlib.crc32(payload)}
