"""``previous_tokens``: each key of the encoder's cross-attention also embeds its cell's tokens of the step before,
so a single key says how its cell changed."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import get_preset
from tests.perception.helpers import (
    assert_stream_equals_offline,
    load_without_predictor_key,
    tiny,
    two_clips_that_end_alike,
)


@pytest.mark.parametrize("previous_tokens", [False, True])
def test_a_one_frame_window_sees_how_the_frame_changed_only_with_previous_tokens(clip, previous_tokens):
    torch.manual_seed(0)
    model = tiny(previous_tokens=previous_tokens, encoder="patch")  # a frame's tokens from that frame alone
    with torch.no_grad():
        context = model.extract_context(two_clips_that_end_alike(clip), window=1)[:, -1]
    assert torch.allclose(context[0], context[1], atol=1e-5) != previous_tokens


@pytest.mark.parametrize("window", [None, 4])
def test_stream_equals_offline_with_previous_tokens(clip, window):
    torch.manual_seed(0)
    model = tiny(previous_tokens=True, recency_bias=1.0, motion_attention_bias=1.0)
    assert_stream_equals_offline(model, clip, window)


def test_the_previous_tokens_map_is_trained(clip):
    model = tiny(previous_tokens=True).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    assert model.predictor.previous_proj.weight.grad.abs().sum() > 0


def test_training_from_cached_tokens_gives_the_loss_of_frames(clip):
    torch.manual_seed(0)
    model = tiny(previous_tokens=True)
    with torch.no_grad():
        from_frames = model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
        tokens = model.predictor.tokenize(clip[:, :8])
        from_tokens = model.predictor(None, num_context_frames=5, tokens=tokens)
    assert torch.allclose(from_frames["loss"], from_tokens["loss"], atol=1e-5)


def test_a_config_written_before_previous_tokens_loads_without_them(tmp_path):
    assert load_without_predictor_key(tmp_path / "model", "previous_tokens").predictor.previous_proj is None


def test_the_paper_preset_keeps_the_seeds_keys():
    assert get_preset("paper").predictor.previous_tokens is False
