"""CheckpointManager: round trip (weights, buffers, optimizer, scheduler, RNG), keep-last-k, crash safety, corruption;
perception model directories: the nested config, the flat one of earlier versions, presets and overrides."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from torch import nn

import aime_rl.training.checkpoint as checkpoint_module
from aime_rl.data import moving_sprites
from aime_rl.perception import (
    PRESETS,
    CausalPerceiverConfig,
    CausalPerceiverIO,
    PerceiverTokenPredictor,
    PredictorConfig,
    TokenizerConfig,
    get_preset,
)
from aime_rl.training import CheckpointManager

from .conftest import FLAT_TINY_CONFIG


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
    with pytest.raises(ValueError, match="model.safetensors"):
        CheckpointManager(tmp_path).load(path, nn.Linear(3, 3))


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    CheckpointManager(tmp_path).save(1, model)
    restored = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    CheckpointManager(tmp_path).load_latest(restored)
    assert torch.equal(restored[0].weight, model[0].weight)


# -- perception model directories: the nested config, and the flat one of earlier versions ------------------------


@pytest.fixture(scope="module")
def perceiver() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32)).eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return moving_sprites(2, 4, 32, generator=torch.Generator().manual_seed(3))


def same_context(a: CausalPerceiverIO, b: CausalPerceiverIO, clip: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval().extract_context(clip), b.eval().extract_context(clip))


def test_save_pretrained_writes_exactly_the_nested_config(perceiver, clip, tmp_path):
    perceiver.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written == json.loads(json.dumps({"class": "CausalPerceiverIO", **asdict(perceiver.config)}))
    assert set(written) == {"class", "video_shape", "tokenizer", "predictor"}
    assert written["tokenizer"]["frame_size"] == [32, 32] and written["predictor"]["num_latents"] == 8
    loaded = CausalPerceiverIO.from_pretrained(tmp_path)
    assert loaded.config == perceiver.config and same_context(loaded, perceiver, clip)


@pytest.mark.parametrize("drop", [(), ("mark_changes",)])
def test_a_flat_config_of_earlier_versions_loads_into_the_same_model(perceiver, clip, tmp_path, drop):
    perceiver.save_pretrained(tmp_path / "old")
    flat = {k: v for k, v in FLAT_TINY_CONFIG.items() if k not in drop}
    (tmp_path / "old" / "config.json").write_text(json.dumps(flat))
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "old")
    assert loaded.config == perceiver.config and same_context(loaded, perceiver, clip)
    loaded.save_pretrained(tmp_path / "new")  # saved again, it is nested
    assert "tokenizer" in json.loads((tmp_path / "new" / "config.json").read_text())


def test_flat_tokenizer_options_of_earlier_versions_reach_the_tokenizer(perceiver, tmp_path):
    torch.manual_seed(0)
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), patch_size=2, window=3)
    model.save_pretrained(tmp_path)
    flat = {**FLAT_TINY_CONFIG, "tokenizer_options": {"patch_size": 2, "dropout": 0.1}, "mark_changes": True}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    with pytest.raises(ValueError, match="change_embedding"):  # these weights have no change marks
        CausalPerceiverIO.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**flat, "mark_changes": False}))
    config = CausalPerceiverIO.from_pretrained(tmp_path).config
    assert (config.tokenizer.patch_size, config.tokenizer.dropout, config.predictor.dropout) == (2, 0.1, 0.0)
    assert config.predictor.window is None  # the flat format had no window: the default


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(bogus=1), "config.json: unknown key 'bogus'"),
        (lambda c: c["tokenizer"].update(bogus=1), "config.json: tokenizer: unknown key 'bogus'"),
        (lambda c: c["predictor"].pop("num_latents"), "config.json: predictor: missing key 'num_latents'"),
        (lambda c: c["tokenizer"].pop("stability_weight"), "tokenizer: missing key 'stability_weight'"),
        (lambda c: c.pop("predictor"), "missing key 'predictor'"),
        (lambda c: c.pop("video_shape"), "missing key 'video_shape'"),
        (lambda c: c.update(tokenizer=[1, 2]), "key 'tokenizer' must be an object of TokenizerConfig keys"),
        (lambda c: c["predictor"].update(num_latents="8"), "predictor: key 'num_latents' must be int"),
        (lambda c: c["tokenizer"].update(patch_size="2"), "tokenizer: key 'patch_size' must be int"),
        (lambda c: c["tokenizer"].update(frame_size=[64, 64]), "key 'frame_size' must match video_shape"),
        (lambda c: c["tokenizer"].update(in_channels=1), "key 'in_channels' must match video_shape"),
        (lambda c: c["predictor"].update(num_latents=0), "num_latents must be an integer >= 1"),
    ],
)
def test_hand_edited_nested_configs_raise_value_error_naming_the_key(perceiver, tmp_path, edit, match):
    perceiver.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        CausalPerceiverIO.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("frame_size", "expected"), [(32, (32, 32)), ((32, 48), (32, 48)), ([16, 8], (16, 8))]
)
def test_from_preset_takes_a_frame_size(frame_size, expected):
    model = CausalPerceiverIO.from_preset("tiny", frame_size=frame_size, sequence_length=4)
    assert model.frame_size == expected and model.config.video_shape == (4, 3, *expected)
    assert model.config.tokenizer.frame_size == expected and model.tokenizer.frame_size == expected
    same = CausalPerceiverIO.from_preset("tiny", frame_size=frame_size, video_shape=(6, 3, *expected))
    assert same.config.video_shape == (6, 3, *expected)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(frame_size=32, video_shape=(8, 3, 64, 64)), "frame_size=32 disagrees with video_shape"),
        (dict(frame_size=0), "frame_size must be an integer >= 1 or"),
        (dict(frame_size=(32, 32, 3)), "frame_size must be"),
        (dict(in_channels=1), "unknown override 'in_channels' for preset 'tiny' \\(set by video_shape\\)"),
        (dict(tokenizer_options={"code_dim": 8}), "tokenizer_options: unknown key 'code_dim'"),
    ],
)
def test_bad_preset_overrides_are_refused_by_name(overrides, match):
    with pytest.raises(ValueError, match=match):
        CausalPerceiverIO.from_preset("tiny", **overrides)


def test_presets_are_nested_configs_and_overrides_go_where_they_belong():
    for name in PRESETS:
        assert isinstance(get_preset(name), CausalPerceiverConfig)
    config = get_preset("tiny", patch_size=2, window=4, dropout=0.2, perceptual_weight=0.5, num_codes=64)
    assert (config.tokenizer.patch_size, config.tokenizer.num_codes, config.tokenizer.dropout) == (2, 64, 0.0)
    assert (config.predictor.window, config.predictor.dropout) == (4, 0.2)
    assert config.tokenizer.perceptual_weight == config.predictor.perceptual_weight == 0.5
    assert get_preset("tiny") == get_preset("tiny") and get_preset("tiny") is not get_preset("tiny")
    assert get_preset("tiny").video_shape == (8, 3, 64, 64)  # T = sequence_length, 64×64 frames


def test_from_config_builds_an_equal_model_with_its_own_config(perceiver, clip):
    config = get_preset("tiny", video_shape=(8, 3, 32, 32), window=2)
    torch.manual_seed(0)
    model = CausalPerceiverIO.from_config(config)
    assert model.config == config and model.config is not config and model.predictor.window == 2
    assert model.config.tokenizer is not config.tokenizer
    predictor = PerceiverTokenPredictor.from_config(model.config.predictor, model.tokenizer)
    assert predictor.config == model.predictor.config
    torch.manual_seed(0)
    plain = CausalPerceiverIO.from_config(replace(config, predictor=replace(config.predictor, window=None)))
    assert plain.config == perceiver.config and same_context(plain, perceiver, clip)


def test_the_config_reads_through_the_former_flat_names():
    config = CausalPerceiverIO(perceptual_weight=0.0).config
    assert config == CausalPerceiverConfig(
        tokenizer=TokenizerConfig(perceptual_weight=0.0),
        predictor=PredictorConfig(num_self_attention_heads=8, perceptual_weight=0.0),
    )
    assert (config.num_latents, config.num_codes, config.dropout) == (128, 1024, 0.1)
    assert config.frame_size == config.tokenizer.frame_size == (64, 64)
    with pytest.raises(AttributeError, match="config.predictor.num_latents"):
        config.num_latents = 4
    with pytest.raises(AttributeError, match="bogus"):
        config.bogus  # noqa: B018
    moved = replace(config, video_shape=(4, 1, 32, 32))  # the tokenizer follows video_shape
    assert (moved.tokenizer.in_channels, moved.tokenizer.frame_size) == (1, (32, 32))
