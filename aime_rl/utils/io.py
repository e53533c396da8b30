"""Atomic writes and the safetensors + JSON checkpoint format.

Everything that matters on disk (model weights, configs, replay chunks) is written to a temporary file in the
target directory, fsynced, then renamed over the destination: a crash leaves either the old file or the new one,
never a truncated file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce a file, fsync it and rename it to ``path``.

    The temporary file lives in the destination directory so the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
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
    """Write ``config.json`` and ``model.safetensors`` (parameters and buffers) into ``directory``.

    The weights are written before the config, so a directory with a config always has complete weights.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(directory / WEIGHTS_NAME, module.state_dict())
    atomic_write_json(directory / CONFIG_NAME, dict(config))
    return directory


def load_module_dir(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` written by :func:`save_module_dir`; clear ``ValueError`` when missing/corrupt."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory not found: {directory}")
    return read_json(directory / CONFIG_NAME), read_safetensors(directory / WEIGHTS_NAME)


def load_state_dict_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Any) -> None:
    """``module.load_state_dict(state)`` that names ``source`` when keys or shapes disagree."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {source} do not match the model config: {err}") from err
