"""Perception model directories: the nested config, the flat one of earlier versions, presets and overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

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
from tests.helpers import FLAT_TINY_CONFIG


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
        (dict(frozen_embeddings="yes"), "overrides: key 'frozen_embeddings' must be bool, got 'yes'"),
        (dict(num_latents=8.0), "overrides: key 'num_latents' must be int, got 8.0"),
        (dict(downsample="4"), "overrides: key 'downsample' must be int"),
    ],
)
def test_bad_preset_overrides_are_refused_by_name(overrides, match):
    with pytest.raises(ValueError, match=match):
        CausalPerceiverIO.from_preset("tiny", **overrides)


def test_constructor_arguments_of_the_wrong_type_are_refused_by_name():
    with pytest.raises(ValueError, match="arguments: key 'num_latents' must be int, got 'x'"):
        CausalPerceiverIO(video_shape=(8, 3, 64, 64), num_latents="x")


def test_presets_are_nested_configs_and_overrides_go_where_they_belong():
    for name in PRESETS:
        assert isinstance(get_preset(name), CausalPerceiverConfig)
    config = get_preset("tiny", patch_size=2, window=4, dropout=0.2, perceptual_weight=0.5, num_codes=64)
    assert (config.tokenizer.patch_size, config.tokenizer.num_codes, config.tokenizer.dropout) == (2, 64, 0.0)
    assert (config.predictor.window, config.predictor.dropout) == (4, 0.2)
    assert config.tokenizer.perceptual_weight == config.predictor.perceptual_weight == 0.5
    assert get_preset("tiny") == get_preset("tiny") and get_preset("tiny") is not get_preset("tiny")
    assert get_preset("tiny").video_shape == (8, 3, 64, 64)  # T = sequence_length, 64×64 frames


def test_cpu_presets_train_the_same_with_or_without_the_lpips_weights():
    """The perceptual term switches itself off where AlexNet's weights are not cached; a preset meant for a fresh
    machine must not depend on that, so "tiny" and "small" leave it off in both sections."""
    for name in ("tiny", "small"):
        config = get_preset(name)
        assert config.tokenizer.perceptual_weight == config.predictor.perceptual_weight == 0.0, name


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
