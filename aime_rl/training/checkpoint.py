"""Crash-safe training checkpoints that never execute code when loaded.

Layout of ``directory`` (one sub-directory per checkpoint, ``keep_last`` of them kept)::

    directory/latest                       name of the newest complete checkpoint, e.g. "step_00000500"
    directory/step_00000500/model.safetensors  model.state_dict() (parameters and buffers)
    directory/step_00000500/config.json        the config given to ``save`` (model/trainer settings)
    directory/step_00000500/state.pt           optimizer + scheduler state, RNG states, step, extra counters
    directory/step_00000500/manifest.json      size and SHA-256 of the three files above

``state.pt`` is written with ``torch.save`` and read with ``torch.load(weights_only=True)``: only tensors and
plain containers (dict, list, tuple, str, int, float, bool, None) are allowed, so a checkpoint cannot run code.
The NumPy RNG state is therefore stored as a tensor, not as NumPy arrays.

Crash safety: a checkpoint is assembled in a hidden temporary directory (``.tmp-step_...``) with atomic writes,
which is renamed to ``step_<N>`` only when every file is complete and fsynced; then ``latest`` is replaced
atomically, and only then are older checkpoints deleted. A crash at any point leaves the previous checkpoint
loadable and ``latest`` pointing at a complete directory (leftover temporary directories are ignored and removed
by the next ``save``; if ``latest`` ever names a missing directory, the newest complete one is used). Damage the writer cannot produce (a truncated or edited file) raises ``ValueError`` naming
the file.

File modes follow the umask (files ``0o666 & ~umask``, checkpoint directories ``0o777 & ~umask``), so a run can be
shared with a group; see :mod:`aime_rl.utils.io`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aime_rl.utils.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    atomic_save_safetensors,
    atomic_write,
    atomic_write_json,
    file_digest,
    fsync_dir,
    load_state_dict_strict,
    make_temp_dir,
    read_json,
    read_safetensors,
    verify_file_digest,
)

logger = logging.getLogger(__name__)

__all__ = ["CheckpointManager", "capture_rng_state", "restore_rng_state"]

STATE_NAME = "state.pt"
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest"
FORMAT_NAME = "aime_rl.checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


# ----------------------------------------------------------------------------------------------------------------
# RNG state as weights_only-loadable data
# ----------------------------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), NumPy's global generator and Python's ``random``.

    Everything is a tensor, a number or a tuple/list of them, so ``torch.load(weights_only=True)`` accepts it.
    """
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only when the device count matches."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d: CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is made of types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: dict keys must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(
            f"{where} has type {type(value).__name__}; checkpoints hold only tensors, numbers, str, bool, "
            "None and lists/tuples/dicts of them"
        )


def _weights_for_safetensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors for safetensors, which refuses tensors sharing memory (tied weights): those are copied."""
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if tensor.numel() and key in seen:
            tensor = tensor.clone()
        seen.add(key)
        tensors[name] = tensor.contiguous()
    return tensors


def _save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ----------------------------------------------------------------------------------------------------------------
# the manager
# ----------------------------------------------------------------------------------------------------------------


class CheckpointManager:
    """Save and restore ``(model, optimizer, scheduler, RNG, counters)`` under ``directory``, keeping the last k.

    Args:
        directory: where the ``step_<N>`` sub-directories and the ``latest`` pointer live (created on save).
        keep_last: number of checkpoints kept (older ones are deleted after a new one is complete);
            ``None`` keeps all.

    Example::

        manager = CheckpointManager(logdir / "checkpoints", keep_last=3)
        manager.save(step, model, optimizer, scheduler, extra={"bad_steps": 0}, config={"lr": 3e-4})
        state = manager.load_latest(model, optimizer, scheduler)   # None when there is no checkpoint
        start_step = 0 if state is None else state["step"]
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int | None = 3):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep_last={self.keep_last})"

    # -- listing -------------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first (temporary directories are never listed)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def latest_path(self) -> Path | None:
        """The checkpoint ``latest`` names; the newest listed one when the pointer is missing or stale."""
        pointer = self.directory / LATEST_NAME
        if pointer.is_file():
            name = pointer.read_text().strip()
            if _STEP_DIR.match(name) and (self.directory / name).is_dir():
                return self.directory / name
            logger.warning(
                "%s names %r, which is not a checkpoint; using the newest one instead", pointer, name
            )
        listed = self.checkpoints()
        return listed[-1] if listed else None

    def latest_step(self) -> int:
        """The number of training steps the newest checkpoint holds (0 when there is none)."""
        path = self.latest_path()
        return 0 if path is None else int(_STEP_DIR.match(path.name).group(1))

    # -- saving --------------------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        extra: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``step_<step>`` atomically, point ``latest`` at it, prune old ones; return its path.

        Args:
            step: number of completed training steps (>= 0).
            model: the module (unwrap DDP first); ``state_dict()`` with buffers goes to ``model.safetensors``.
            optimizer, scheduler: objects with ``state_dict()``; ``None`` is stored as absent.
            extra: counters to restore (tensors, numbers, str, bool, None and containers of them).
            config: JSON-serialisable settings, written to ``config.json``.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        extra = dict(extra or {})
        if "step" in extra:
            raise ValueError("extra must not contain 'step' (it is the step argument)")
        _check_plain(extra, "extra")
        state = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "step": step,
            "extra": extra,
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": capture_rng_state(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        final = self.directory / _step_dir_name(step)
        staging = make_temp_dir(self.directory, prefix=f"{_TMP_PREFIX}{final.name}-")
        try:
            atomic_save_safetensors(staging / WEIGHTS_NAME, _weights_for_safetensors(model.state_dict()))
            atomic_write_json(staging / CONFIG_NAME, dict(config or {}))
            _save_torch(staging / STATE_NAME, state)
            manifest = {name: file_digest(staging / name) for name in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME)}
            atomic_write_json(
                staging / MANIFEST_NAME, {"format": FORMAT_NAME, "step": step, "files": manifest}
            )
            self._publish(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_write(self.directory / LATEST_NAME, lambda tmp: Path(tmp).write_text(final.name + "\n"))
        self._prune(keep=final)
        return final

    def _publish(self, staging: Path, final: Path) -> None:
        """Rename the finished staging directory to ``final`` (replacing an older save of the same step)."""
        old = None
        if final.exists():
            old = self.directory / f"{_TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(staging, final)
        fsync_dir(self.directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _prune(self, keep: Path) -> None:
        if self.keep_last is None:
            return
        listed = [path for path in self.checkpoints() if path != keep]
        for path in listed[: max(len(listed) - (self.keep_last - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Delete staging/trash directories of saves that crashed (one writer per directory is assumed)."""
        for path in self.directory.iterdir():
            if path.is_dir() and path.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                shutil.rmtree(path, ignore_errors=True)

    # -- loading -------------------------------------------------------------------------------------------------

    def load_latest(
        self,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        restore_rng: bool = True,
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint (see :meth:`load`); ``None`` when there is none. A damaged newest checkpoint
        raises ``ValueError`` naming it and the older one a rerun would resume from once it is deleted."""
        path = self.latest_path()
        if path is None:
            return None
        try:
            self._verify(path)
        except ValueError as err:
            older = [p for p in self.checkpoints() if p != path]
            remedy = (
                f"delete {path} to resume from {older[-1].name}" if older else f"delete {path} to start over"
            )
            raise ValueError(f"{err}; {remedy} (or start over: the CLI stage's --restart)") from err
        return self.load(path, model, optimizer, scheduler, restore_rng=restore_rng, verify=False)

    def load(
        self,
        path: str | os.PathLike,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        restore_rng: bool = True,
        verify: bool = True,
    ) -> dict[str, Any]:
        """Restore the checkpoint directory ``path`` into the given objects (each optional).

        Files are checked against ``manifest.json`` first (``verify=False``: the caller has just done so); a
        missing, truncated or altered file raises ``ValueError`` naming it. With ``restore_rng`` the torch/NumPy/Python (and CUDA) RNG states are restored.

        Returns:
            ``{"step": N, **extra}`` as passed to :meth:`save`.
        """
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"checkpoint directory not found: {path}")
        if verify:
            self._verify(path)
        state = self._read_state(path / STATE_NAME)
        if model is not None:
            weights = read_safetensors(path / WEIGHTS_NAME)
            try:
                load_state_dict_strict(model, weights, path / WEIGHTS_NAME)
            except ValueError as err:
                raise ValueError(
                    f"{err}\nThis checkpoint was written by a model of another configuration (or an older aime-rl), "
                    f"so the training cannot resume from it: start it over (the CLI stage's --restart, or delete "
                    f"{self.directory})"
                ) from err
        if optimizer is not None:
            self._load_component(optimizer, state, "optimizer", path)
        if scheduler is not None:
            self._load_component(scheduler, state, "scheduler", path)
        if restore_rng:
            restore_rng_state(state["rng"])
        return {"step": int(state["step"]), **state["extra"]}

    def read_config(self, path: str | os.PathLike) -> dict:
        """The ``config.json`` of checkpoint ``path``."""
        return read_json(Path(path) / CONFIG_NAME)

    @staticmethod
    def _verify(path: Path) -> None:
        manifest = read_json(path / MANIFEST_NAME)
        files = manifest.get("files")
        if not isinstance(files, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"corrupted checkpoint manifest {path / MANIFEST_NAME}")
        for name, expected in files.items():
            verify_file_digest(path / name, expected, kind="checkpoint")

    @staticmethod
    def _read_state(file: Path) -> dict[str, Any]:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, disallowed global, ...: all mean "unusable file"
            raise ValueError(f"corrupted checkpoint file {file}: {err}") from err
        required = ("step", "extra", "optimizer", "scheduler", "rng")
        if (
            not isinstance(state, dict)
            or state.get("format") != FORMAT_NAME
            or any(k not in state for k in required)
        ):
            raise ValueError(f"corrupted checkpoint file {file}: not an {FORMAT_NAME} state")
        return state

    @staticmethod
    def _load_component(target: Any, state: Mapping[str, Any], key: str, path: Path) -> None:
        if state[key] is None:
            raise ValueError(f"checkpoint {path} has no {key} state to restore")
        try:
            target.load_state_dict(state[key])
        except (KeyError, ValueError, RuntimeError) as err:
            raise ValueError(f"{key} state in {path / STATE_NAME} does not match the {key}: {err}") from err
