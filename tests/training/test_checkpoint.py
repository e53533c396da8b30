"""CheckpointManager: round trip (weights, buffers, optimizer, scheduler, RNG), keep-last-k, crash safety,
corruption."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import aime_rl.training.checkpoint as checkpoint_module
from aime_rl.training import CheckpointManager


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)  # running statistics: buffers must round-trip too
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(x)).mean((-2, -1)))


def train_a_little(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, steps: int = 3) -> None:
    for _ in range(steps):
        loss = model(torch.randn(2, 3, 8, 8)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def make_state():
    model = TinyNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (1 + i))
    return model, optimizer, scheduler


def draw_random_numbers() -> tuple:
    return torch.rand(3), np.random.rand(3), np.random.normal(), random.random()


def assert_same_draws(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and a[3] == b[3]


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = make_state()
    train_a_little(model, optimizer, scheduler)
    np.random.normal()  # leave a cached Gaussian in NumPy's legacy state
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(
        7, model, optimizer, scheduler, extra={"bad_steps": 2, "note": "x"}, config={"lr": 1e-2, "size": [3]}
    )
    assert path.name == "step_00000007"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors",
        "config.json",
        "state.pt",
        "manifest.json",
    }
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == path.name
    assert manager.read_config(path) == {"lr": 1e-2, "size": [3]}
    after_save = draw_random_numbers()
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}

    restored, restored_optimizer, restored_scheduler = make_state()
    state = manager.load_latest(restored, restored_optimizer, restored_scheduler)

    assert state == {"step": 7, "bad_steps": 2, "note": "x"}
    assert_same_draws(draw_random_numbers(), after_save)
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert restored_scheduler.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]
    assert restored_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    # identical optimizer state ⇒ identical next update
    torch.manual_seed(5)
    train_a_little(model, optimizer, scheduler, steps=2)
    torch.manual_seed(5)
    train_a_little(restored, restored_optimizer, restored_scheduler, steps=2)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_state_file_loads_with_weights_only(tmp_path):
    model, optimizer, scheduler = make_state()
    train_a_little(model, optimizer, scheduler)
    path = CheckpointManager(tmp_path).save(1, model, optimizer, scheduler)
    state = torch.load(path / "state.pt", weights_only=True)
    assert state["step"] == 1 and "exp_avg" in state["optimizer"]["state"][0]


def test_load_without_checkpoint_returns_none(tmp_path):
    assert CheckpointManager(tmp_path / "nothing").load_latest(TinyNet()) is None


def test_extra_with_arbitrary_objects_is_refused(tmp_path):
    model, optimizer, _ = make_state()
    with pytest.raises(TypeError, match="extra"):
        CheckpointManager(tmp_path).save(1, model, optimizer, extra={"bad": object()})


def test_keeps_only_the_last_k(tmp_path):
    model, optimizer, scheduler = make_state()
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30, 40):
        manager.save(step, model, optimizer, scheduler)
    assert [p.name for p in manager.checkpoints()] == ["step_00000030", "step_00000040"]
    assert manager.latest_path().name == "step_00000040"
    assert manager.load_latest(model)["step"] == 40


def test_saving_the_same_step_again_replaces_it(tmp_path):
    model, optimizer, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(5, model, optimizer, extra={"version": 1})
    manager.save(5, model, optimizer, extra={"version": 2})
    assert [p.name for p in manager.checkpoints()] == ["step_00000005"]
    assert manager.load_latest(model)["version"] == 2


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, scheduler = make_state()
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(1, model, optimizer, scheduler)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    train_a_little(model, optimizer, scheduler)

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        manager.save(2, model, optimizer, scheduler)
    monkeypatch.undo()

    assert {p.name for p in tmp_path.iterdir()} == {"step_00000001", "latest"}  # no half checkpoint left
    assert (tmp_path / "latest").read_text().strip() == "step_00000001"
    assert [p.name for p in manager.checkpoints()] == ["step_00000001"]
    restored = TinyNet()
    assert manager.load_latest(restored)["step"] == 1
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_leftover_staging_directory_is_not_a_checkpoint(tmp_path):
    model, optimizer, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(1, model, optimizer)
    # what a process killed mid-save leaves behind: a hidden, half-written staging directory
    staging = tmp_path / ".tmp-step_00000002-abc"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in manager.checkpoints()] == ["step_00000001"]
    assert manager.load_latest(model)["step"] == 1
    manager.save(3, model, optimizer)
    assert not staging.exists()


def test_stale_latest_pointer_falls_back_to_newest_checkpoint(tmp_path):
    model, optimizer, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(1, model, optimizer)
    manager.save(2, model, optimizer)
    (tmp_path / "latest").write_text("step_00000009\n")
    assert manager.load_latest(model)["step"] == 2


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt", "config.json"])
def test_truncated_file_raises_value_error_naming_it(tmp_path, name):
    model, optimizer, scheduler = make_state()
    path = CheckpointManager(tmp_path).save(1, model, optimizer, scheduler, config={"a": 1})
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name):
        CheckpointManager(tmp_path).load_latest(model, optimizer, scheduler)


def test_a_damaged_newest_checkpoint_names_the_older_one_a_rerun_would_resume_from(tmp_path):
    model, optimizer, scheduler = make_state()
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(1, model, optimizer, scheduler)
    newest = manager.save(2, model, optimizer, scheduler)
    (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="state.pt.*delete .*step_00000002 to resume from step_00000001"):
        manager.load_latest(model, optimizer, scheduler)
    shutil.rmtree(newest)  # what the message says to do
    assert manager.load_latest(model, optimizer, scheduler)["step"] == 1


def test_unreadable_state_raises_value_error_naming_it_even_without_manifest(tmp_path):
    model, optimizer, _ = make_state()
    path = CheckpointManager(tmp_path).save(1, model, optimizer)
    (path / "manifest.json").write_text('{"format": "aime_rl.checkpoint", "files": {}}')
    (path / "state.pt").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="state.pt"):
        CheckpointManager(tmp_path).load(path, model, optimizer)


def test_pickled_code_in_state_is_refused(tmp_path):
    model, optimizer, _ = make_state()
    path = CheckpointManager(tmp_path).save(1, model, optimizer)
    torch.save({"format": "aime_rl.checkpoint", "payload": TinyNet()}, path / "state.pt")  # a pickled module
    (path / "manifest.json").write_text('{"format": "aime_rl.checkpoint", "files": {}}')
    with pytest.raises(ValueError, match="state.pt"):
        CheckpointManager(tmp_path).load(path, model)


def test_mismatched_model_raises_value_error(tmp_path):
    model, optimizer, _ = make_state()
    path = CheckpointManager(tmp_path).save(1, model, optimizer)
    with pytest.raises(ValueError, match="(?s)model.safetensors.*start it over"):
        CheckpointManager(tmp_path).load(path, nn.Linear(3, 3))


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    CheckpointManager(tmp_path).save(1, model)
    restored = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    CheckpointManager(tmp_path).load_latest(restored)
    assert torch.equal(restored[0].weight, model[0].weight)
