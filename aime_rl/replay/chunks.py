"""The on-disk format of a replay store: ``meta.json`` and the chunk files, their names, encoding and validation.

This module holds the format constants, the ``meta.json`` reader and writer, the naming of chunk files, the
:class:`_Chunk` record parsed from a commit marker, the byte encoding of a chunk's arrays, and the checks that run
when a committed chunk is read (sizes, ``.npy`` header, ``.npz`` contents, CRC32). It knows nothing of episodes or
of the store object; the layout and the crash-safety contract are described in :mod:`aime_rl.replay.store`.
Nothing is ever loaded with ``allow_pickle=True``.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aime_rl.utils.io import atomic_write_json, read_json

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
# metadata (meta.json)
# ----------------------------------------------------------------------------------------------------------------


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


def read_meta(meta_path: Path) -> dict[str, Any] | None:
    """The parsed ``meta.json`` at ``meta_path``, or ``None`` when there is none.

    ``ValueError`` when the file is of another format or another format version.
    """
    meta = read_json(meta_path) if meta_path.exists() else None
    if meta is not None and meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_path} is not a replay store metadata file (format={meta.get('format')!r})")
    if meta is not None and meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has replay format version {meta.get('version')!r}; this aime_rl reads version "
            f"{FORMAT_VERSION} only (written by another aime_rl version?)"
        )
    return meta


def write_meta(
    meta_path: Path,
    frame_shape: tuple[int, int, int],
    action_shape: tuple[int, ...] | None,
    action_dtype: np.dtype | None,
) -> None:
    """Atomically write ``meta.json``: frame shape ``(H, W, 3)``, action shape and dtype (``None``: not yet known).

    ``ValueError`` when another writer declared different actions in ``meta_path`` meanwhile.
    """
    if meta_path.exists():  # another writer may have declared the actions meanwhile
        other = read_json(meta_path)
        if other.get("action_shape") is not None and action_shape is not None:
            theirs = (tuple(other["action_shape"]), np.dtype(other["action_dtype"]))
            if theirs != (action_shape, action_dtype):
                raise ValueError(f"{meta_path} declares actions {theirs}, this writer has {action_shape}")
    atomic_write_json(
        meta_path,
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "frame_shape": list(frame_shape),
            "action_shape": None if action_shape is None else list(action_shape),
            "action_dtype": None if action_dtype is None else action_dtype.name,
        },
    )


# ----------------------------------------------------------------------------------------------------------------
# chunk files: names, the commit marker record, encoding
# ----------------------------------------------------------------------------------------------------------------


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


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(rows: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: rows[name] for name in DATA_KEYS})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# reading and validating committed chunks
# ----------------------------------------------------------------------------------------------------------------


def read_marker(chunk_dir: Path, stem: str) -> _Chunk:
    """Parse the commit marker of chunk ``stem`` in ``chunk_dir``; ``ValueError`` naming it when corrupted."""
    path = chunk_dir / (stem + COMMIT_SUFFIX)
    marker = read_json(path)
    try:
        chunk = _Chunk(
            stem=stem,
            directory=chunk_dir,
            episode_key=str(marker["episode"]),
            index=int(marker["chunk"]),
            start=int(marker["start"]),
            length=int(marker["length"]),
            last=bool(marker["last"]),
            final_observation=bool(marker["final_observation"]),
            committed_ns=int(marker["committed_ns"]),
            files={
                k: {"bytes": int(v["bytes"]), "crc32": int(v["crc32"])} for k, v in marker["files"].items()
            },
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"corrupted commit marker {path}: {err!r}") from err
    if chunk.length < 1 or chunk.start < 0 or set(chunk.files) != {"frames", "data"}:
        raise ValueError(f"corrupted commit marker {path}: inconsistent fields")
    return chunk


def validate_chunk(
    chunk: _Chunk, frame_shape: tuple[int, int, int], action_shape: tuple[int, ...] | None
) -> dict[str, np.ndarray]:
    """Check sizes and headers of a chunk's files; return its small arrays. ``ValueError`` names the file.

    ``frame_shape`` is the store's ``(H, W, 3)``; ``action_shape`` the store's (``None``: not yet known, not checked).
    Returns ``actions [L, *action_shape]``, ``rewards [L]`` float32, ``terminated``/``truncated [L]`` bool with
    ``L = chunk.length``.
    """
    for kind, path in (("frames", chunk.frames_path), ("data", chunk.data_path)):
        if not path.is_file():
            raise ValueError(f"missing file {path} (committed by {chunk.marker_path.name})")
        size = path.stat().st_size
        if size != chunk.files[kind]["bytes"]:
            raise ValueError(
                f"corrupted file {path}: {size} bytes, commit marker says {chunk.files[kind]['bytes']}"
            )
    check_frames_header(chunk, frame_shape)
    return load_data(chunk, action_shape)


def check_frames_header(chunk: _Chunk, frame_shape: tuple[int, int, int]) -> None:
    """``ValueError`` unless the chunk's frames file is a uint8 ``[length, H, W, 3]`` ``.npy`` of the right size."""
    path = chunk.frames_path
    expected = (chunk.length, *frame_shape)
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
        raise ValueError(f"corrupted frames file {path}: holds {dtype} {shape}, expected uint8 {expected}")
    if path.stat().st_size != offset + int(np.prod(shape)):
        raise ValueError(f"corrupted frames file {path}: size does not match its header")


def load_data(chunk: _Chunk, action_shape: tuple[int, ...] | None) -> dict[str, np.ndarray]:
    """Read the chunk's ``.npz`` (the :data:`DATA_KEYS` arrays, ``[length, ...]`` each); ``ValueError`` naming it."""
    path = chunk.data_path
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in DATA_KEYS}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"corrupted data file {path}: {err!r}") from err
    problems = [f"{n} has {len(a)} rows" for n, a in arrays.items() if a.ndim < 1 or len(a) != chunk.length]
    if action_shape is not None and arrays["actions"].shape[1:] != action_shape:
        problems.append(f"actions shape {arrays['actions'].shape[1:]} != store's {action_shape}")
    if problems:
        raise ValueError(f"corrupted data file {path}: {'; '.join(problems)} (expected {chunk.length} rows)")
    return {
        "actions": arrays["actions"],
        "rewards": arrays["rewards"].astype(np.float32, copy=False),
        "terminated": arrays["terminated"].astype(bool, copy=False),
        "truncated": arrays["truncated"].astype(bool, copy=False),
    }


def load_frames(chunk: _Chunk, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """Memory-map a chunk's frames, uint8 ``[length, H, W, 3]``; ``ValueError`` naming the file when it changed
    or vanished."""
    path = chunk.frames_path
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"corrupted frames file {path}: {err}") from err
    if frames.shape != (chunk.length, *frame_shape) or frames.dtype != np.uint8:
        raise ValueError(f"corrupted frames file {path}: holds {frames.dtype} {frames.shape}")
    return frames


def verify_chunk(chunk: _Chunk) -> None:
    """Read the chunk's frames and data files and check their CRC32; ``ValueError`` names the damaged file."""
    for kind, path in (("frames", chunk.frames_path), ("data", chunk.data_path)):
        crc = 0
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                crc = zlib.crc32(block, crc)
        if crc != chunk.files[kind]["crc32"]:
            raise ValueError(f"corrupted file {path}: CRC32 mismatch with {chunk.marker_path.name}")
