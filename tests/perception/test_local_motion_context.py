"""``local_motion_context``: the local motion features of every cell also enter the frame's pooled context, through
their own linear map — the context gets what the convolution computed, not only what the latents pass on."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.predictor import PerceiverTokenPredictor
from tests.perception.helpers import assert_stream_equals_offline, load_without_predictor_key, tiny


def with_motion_context(**overrides) -> CausalPerceiverIO:
    """A tiny model with the motion in its context, its map moved off the zero it starts at (as training does)."""
    model = tiny(local_motion_frames=3, local_motion_context=True, **overrides)
    with torch.no_grad():
        weight = model.predictor.local_motion_context.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    return model


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("pooling", ["mean", "projection"])
def test_stream_equals_offline_with_the_motion_in_the_context(clip, window, pooling):
    model = with_motion_context(
        context_pooling=pooling, recency_bias=1.0, motion_attention_bias=1.0, latent_memory=2
    )
    assert_stream_equals_offline(model, clip, window)


@torch.no_grad()
def test_the_context_before_t_ignores_frames_from_t_on(clip):
    model = with_motion_context()
    changed = clip.clone()
    changed[:, 6:] = 1.0 - changed[:, 6:]
    before, after = model.extract_context(clip, window=4), model.extract_context(changed, window=4)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-5)
    assert not torch.allclose(before[:, 6:], after[:, 6:], atol=1e-3)


@torch.no_grad()
def test_the_context_reads_the_motion_map(clip):
    model = with_motion_context()
    before = model.extract_context(clip, window=4)
    model.predictor.local_motion_context.weight.zero_()
    assert not torch.allclose(before, model.extract_context(clip, window=4), atol=1e-3)


def test_the_map_starts_at_zero_so_the_latents_lead():
    context_map = tiny(local_motion_frames=3, local_motion_context=True).predictor.local_motion_context
    assert not context_map.weight.any() and not context_map.bias.any()


@torch.no_grad()
def test_the_latents_carry_one_motion_slot_and_the_decoder_reads_the_n_latents_only(clip):
    predictor = with_motion_context().predictor
    n = predictor.config.num_latents
    latents = predictor.encode_tokens(predictor.tokenize(clip[:, :4]), 4)
    assert latents.shape[2] == n + 1
    assert predictor.memory(latents).shape[2] == n + 2  # the N latents and the medium and slow summaries
    plain, slot = predictor.split_motion_slot(latents)
    assert plain.shape[2] == n and slot.shape == (2, 4, predictor.num_latent_channels)


@torch.no_grad()
def test_the_streams_last_latents_are_what_the_pooling_reads(clip):
    model = with_motion_context()
    stream = model.stream(2, window=4)
    context = stream.step(clip[:, 0])
    predictor = model.predictor
    assert stream.last_latents.shape[1] == predictor.config.num_latents + 1
    assert torch.allclose(context, predictor.output_context(predictor.frame_context(stream.last_latents)))


def test_the_models_terms_train_the_map(clip):
    model = with_motion_context(context_pooling="projection", context_prediction_weight=1.0).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    assert model.predictor.local_motion_context.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_a_saved_model_gives_the_same_context(tmp_path, clip):
    model = with_motion_context()
    model.save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model").eval()
    assert torch.equal(model.extract_context(clip, window=4), loaded.extract_context(clip, window=4))


def test_off_by_default():
    assert tiny(local_motion_frames=3).predictor.local_motion_context is None


def test_a_config_written_before_it_loads_without_it(tmp_path):
    loaded = load_without_predictor_key(tmp_path / "model", "local_motion_context")
    assert loaded.predictor.local_motion_context is None


def test_it_is_refused_without_local_motion_frames():
    with pytest.raises(ValueError, match="local_motion_frames"):
        tiny(local_motion_context=True)


def test_it_is_refused_for_a_tokenizer_of_any_frame_size():
    tokenizer = copy.deepcopy(tiny().tokenizer)
    tokenizer.config = dataclasses.replace(tokenizer.config, frame_size=None)
    with pytest.raises(ValueError, match="frame_size"):
        PerceiverTokenPredictor(
            tokenizer, num_latents=4, num_latent_channels=32, num_cross_attention_heads=2,
            num_self_attention_layers=1, local_motion_frames=3, local_motion_context=True,
        )  # fmt: skip


def test_it_is_refused_with_temporal_downsampling():
    with pytest.raises(ValueError, match="temporal_downsample"):
        with_motion_context(temporal_downsample=True)
