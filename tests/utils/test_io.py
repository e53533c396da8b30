"""Written files and checkpoint directories follow the umask (shareable file modes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from aime_rl.perception import CausalPerceiverIO
from aime_rl.training.checkpoint import CheckpointManager
from aime_rl.utils.io import atomic_write_json

SIZE = 32


@pytest.fixture(scope="module")
def model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, SIZE, SIZE)).eval()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_written_files_and_checkpoint_directories_follow_the_umask(tmp_path, umask, model):
    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "settings.json", {"a": 1})
        step_dir = CheckpointManager(tmp_path / "checkpoints").save(1, nn.Linear(2, 2))
        model.save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous)
    files = [tmp_path / "settings.json", *step_dir.iterdir(), *(tmp_path / "model").iterdir()]
    assert {str(path): _mode(path) for path in files} == {str(path): 0o666 & ~umask for path in files}
    assert _mode(step_dir) == 0o777 & ~umask
    assert _mode(tmp_path / "checkpoints" / "latest") == 0o666 & ~umask
