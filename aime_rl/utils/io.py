"""Atomic writes, file digests and the safetensors + JSON module-directory format.

Everything that matters on disk (model weights, configs, replay chunks) is written to a temporary file in the
target directory, fsynced, then renamed over the destination: a crash leaves either the old file or the new one,
never a truncated file.

File modes follow the umask like ``open()`` and ``mkdir()`` do: files are created ``0o666 & ~umask`` and the
temporary directories of :func:`make_temp_dir` ``0o777 & ~umask`` (``tempfile.mkstemp``/``mkdtemp`` would make
them ``0o600``/``0o700`` whatever the umask, so runs could not be shared with a group).

A module directory (:func:`save_module_dir`) holds ``config.json``, ``model.safetensors`` and ``manifest.json``
(size and SHA-256 of the weights file, checked by :func:`load_module_dir`; directories written before manifests
existed still load).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"
MODULE_FORMAT = "aime_rl.module"


def _create_temp_file(directory: Path, name: str) -> str:
    """Create an empty ``directory/.<name>.<random>.tmp`` with mode ``0o666 & ~umask``; return its path."""
    while True:
        tmp = str(directory / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        os.close(fd)
        return tmp


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Create a new directory ``parent/<prefix><random>`` with mode ``0o777 & ~umask`` (unlike ``mkdtemp``)."""
    parent = Path(parent)
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce a file, fsync it and rename it to ``path``.

    The temporary file lives in the destination directory so the rename is atomic on POSIX file systems. It is
    created ``0o666 & ~umask`` (what ``open(path, "w")`` would give) and keeps that mode even when ``write``
    recreates it, so the final file has that mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path.parent, path.name)
    mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 & ~umask
    try:
        write(tmp)
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # a writer that recreated the file (e.g. safetensors)
            os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename inside it is durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of the file at ``path`` (read in 1 MiB blocks)."""
    path = Path(path)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def verify_file_digest(path: str | os.PathLike, expected: Any, kind: str = "checkpoint") -> None:
    """Raise ``ValueError`` naming ``path`` when it is missing or differs from ``expected`` (a :func:`file_digest`).

    ``kind`` words the message: ``"corrupted <kind> file <path>: expected N bytes with SHA-256 …"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing {kind} file: {path}")
    if not isinstance(expected, dict) or not {"bytes", "sha256"} <= set(expected):
        raise ValueError(f"corrupted {kind} manifest entry for {path}: {expected!r}")
    actual = file_digest(path)
    if actual != {"bytes": expected["bytes"], "sha256": expected["sha256"]}:
        raise ValueError(
            f"corrupted {kind} file {path}: expected {expected['bytes']} bytes with SHA-256 "
            f"{str(expected['sha256'])[:12]}…, found {actual['bytes']} bytes with {actual['sha256'][:12]}…"
        )


def atomic_write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True) -> Path:
    """Write ``obj`` as pretty JSON, atomically (keys sorted, or in ``obj``'s own order with ``sort_keys=False``)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=sort_keys)
            f.write("\n")

    return atomic_write(path, write)


def atomic_save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Save a flat name → tensor mapping as safetensors, atomically (tensors are made contiguous CPU copies)."""
    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, tmp))


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object; a missing or corrupted file raises ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing file: {path}")
    try:
        with open(path) as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupted JSON file {path}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"corrupted JSON file {path}: expected an object, got {type(obj).__name__}")
    return obj


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupted file raises ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing file: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupted safetensors file {path}: {err}") from err


def save_module_dir(directory: str | os.PathLike, module: torch.nn.Module, config: Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` (parameters and buffers), ``manifest.json`` and ``config.json`` into ``directory``.

    The manifest holds the size and SHA-256 of the weights file (checked by :func:`load_module_dir`). The weights
    are written before the manifest and the config, so a directory with a config always has complete weights.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(directory / WEIGHTS_NAME, module.state_dict())
    manifest = {"format": MODULE_FORMAT, "files": {WEIGHTS_NAME: file_digest(directory / WEIGHTS_NAME)}}
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    atomic_write_json(directory / CONFIG_NAME, dict(config))
    return directory


def load_module_dir(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` written by :func:`save_module_dir`.

    A missing or corrupted file, weights that differ from ``manifest.json`` (a flipped byte) and NaN/inf in a
    float tensor raise ``ValueError`` naming the file. A directory without a manifest (written before manifests
    existed) loads after a logged note.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory not found: {directory}")
    if not (directory / WEIGHTS_NAME).exists() and (directory / "model" / WEIGHTS_NAME).is_file():
        raise ValueError(
            f"{directory} holds no {WEIGHTS_NAME}; {directory / 'model'} does (a run's model is its model/)"
        )
    config = read_json(directory / CONFIG_NAME)
    verify_module_manifest(directory)
    state = read_safetensors(directory / WEIGHTS_NAME)
    check_finite_tensors(state, directory / WEIGHTS_NAME)
    return config, state


def verify_module_manifest(directory: str | os.PathLike) -> None:
    """Check ``directory/model.safetensors`` against ``directory/manifest.json`` (see :func:`load_module_dir`)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.exists():
        logger.info(
            "%s has no %s (saved by an older version): weights not checksum-verified", directory, path.name
        )
        return
    files = read_json(path).get("files")
    if not isinstance(files, dict) or WEIGHTS_NAME not in files:
        raise ValueError(f"corrupted manifest {path}: no entry for {WEIGHTS_NAME}")
    verify_file_digest(directory / WEIGHTS_NAME, files[WEIGHTS_NAME], kind="model")


def check_finite_tensors(state: Mapping[str, torch.Tensor], source: Any) -> None:
    """Raise ``ValueError`` naming ``source`` and the tensor when a float tensor holds NaN or inf."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{source}: tensor {name!r} {tuple(tensor.shape)} contains NaN or inf values")


def load_state_dict_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Any) -> None:
    """``module.load_state_dict(state)`` that names ``source`` when keys or shapes disagree, with a short account
    of how (the first few names of each kind, not torch's list of every tensor)."""
    mismatch = describe_state_mismatch(module.state_dict(), state)
    if mismatch:
        raise ValueError(f"weights in {source} do not match the model config: {mismatch}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {source} do not match the model config: {err}") from err


def describe_state_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], shown: int = 3
) -> str:
    """How the tensors ``found`` (a checkpoint's) differ from those ``expected`` (the model's): missing and
    unexpected names and shape mismatches, ``shown`` of each named; "" when names and shapes agree."""

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} in the checkpoint, {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    parts = [
        f"{len(names)} {kind}: {listed(names)}"
        for kind, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if names
    ]
    return "; ".join(parts)
