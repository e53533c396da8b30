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
from aime_rl.utils.io import atomic_write_json, load_state_dict_strict

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


def test_weights_of_another_shape_are_named_briefly_with_both_shapes():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    other = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 2)).state_dict()
    with pytest.raises(
        ValueError, match=r"of another shape: 0\.weight \(16, 4\) in the checkpoint, \(8, 4\) in"
    ):
        load_state_dict_strict(model, other, "ckpt")


def test_missing_and_unexpected_weights_are_counted_and_the_first_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    state = {f"extra{i}": torch.zeros(1) for i in range(5)} | {"0.weight": torch.zeros(8, 4)}
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(model, state, "ckpt")
    message = str(info.value)
    assert "3 missing: 0.bias, 1.weight, 1.bias" in message
    assert "5 unexpected: extra0, extra1, extra2 and 2 more" in message


def test_matching_weights_load():
    model, source = nn.Linear(3, 2), nn.Linear(3, 2)
    load_state_dict_strict(model, source.state_dict(), "ckpt")
    assert torch.equal(model.weight, source.weight)


def test_a_run_directory_given_for_a_model_points_to_its_model(tmp_path, model):
    model.save_pretrained(tmp_path / "run" / "model")
    (tmp_path / "run" / "config.json").write_text("{}")  # a run's own settings file
    with pytest.raises(ValueError, match=r"run/model does \(a run's model is its model/\)"):
        CausalPerceiverIO.from_pretrained(tmp_path / "run")
