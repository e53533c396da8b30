"""``build_model``: the pipeline's perception model, built around the run's own trained tokenizer."""

from __future__ import annotations

from dataclasses import replace

import torch

from aime_rl.perception import VQPTTokenizer, get_preset
from aime_rl.pipeline import RunConfig, build_model


def tiny_config(tmp_path) -> RunConfig:
    return RunConfig(name="build", runs_dir=str(tmp_path), preset="tiny", frame_size=32, sequence_length=4)


def test_a_fresh_model_follows_the_preset(tmp_path):
    model = build_model(tiny_config(tmp_path))
    assert model.config.predictor == get_preset("tiny").predictor
    assert model.config.tokenizer.encoder == get_preset("tiny").tokenizer.encoder == "unet"


def test_a_frame_height_gives_the_model_frames_of_that_shape(tmp_path):
    model = build_model(replace(tiny_config(tmp_path), frame_height=48))
    assert model.frame_size == (48, 32)


def test_a_trained_tokenizer_keeps_its_own_architecture_and_weights(tmp_path):
    # e.g. a run whose tokenizer was trained before the preset changed its encoder
    torch.manual_seed(1)
    tokenizer = build_model(tiny_config(tmp_path)).tokenizer
    tokenizer = VQPTTokenizer.from_config(replace(tokenizer.config, encoder="patch", padding="replicate"))
    model = build_model(tiny_config(tmp_path), tokenizer)
    assert (model.config.tokenizer.encoder, model.config.tokenizer.padding) == ("patch", "replicate")
    video = torch.rand(1, 3, 3, 32, 32)
    assert torch.equal(model.tokenizer.encode(video)[0], tokenizer.eval().encode(video)[0])
    assert model.config.predictor == get_preset("tiny").predictor


def test_predictor_kwargs_change_the_context_model_and_nothing_else(tmp_path):
    config = replace(
        tiny_config(tmp_path), predictor_kwargs={"motion_attention_bias": 0.5, "recency_bias": 2}
    )
    model = build_model(config)
    expected = replace(get_preset("tiny").predictor, motion_attention_bias=0.5, recency_bias=2.0)
    assert model.config.predictor == expected
    assert model.config.tokenizer == build_model(tiny_config(tmp_path)).config.tokenizer
