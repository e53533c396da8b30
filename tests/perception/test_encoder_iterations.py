"""``encoder_iterations``: the latents cross-attend to the tokens again, querying with what the first pass found."""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import assert_stream_equals_offline, load_without_predictor_key, tiny


@pytest.mark.parametrize("window", [None, 4])
def test_stream_equals_offline_with_two_passes(clip, window):
    torch.manual_seed(0)
    model = tiny(encoder_iterations=2, recency_bias=1.0, motion_attention_bias=1.0)
    assert_stream_equals_offline(model, clip, window)


def test_stream_equals_offline_with_three_passes_and_spatial_attention(clip):
    torch.manual_seed(0)
    model = tiny(encoder_iterations=3, spatial_attention_bias=4.0, temporal_downsample=True)
    assert_stream_equals_offline(model, clip, 4)


def test_a_second_pass_changes_the_context_with_the_same_weights(clip):
    torch.manual_seed(0)
    one = tiny()
    two = tiny(encoder_iterations=2)
    two.load_state_dict(one.state_dict())  # no new weights: the same layers run twice
    assert not torch.allclose(one.extract_context(clip), two.extract_context(clip))


def test_the_second_pass_queries_with_what_the_first_found(clip):
    torch.manual_seed(0)
    model = tiny(encoder_iterations=2)
    first = model.predictor.encoder.cross_attention
    seen = []
    handle = first.q_norm.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    model.extract_context(clip[:, :2])
    handle.remove()
    learned = model.predictor.encoder.latents
    assert len(seen) == 2 and torch.allclose(seen[0][0, : learned.shape[0]], learned)
    assert not torch.allclose(seen[1][0, : learned.shape[0]], learned)


def test_fewer_than_one_pass_is_refused():
    with pytest.raises(ValueError, match="encoder_iterations"):
        tiny(encoder_iterations=0)


def test_a_config_written_before_iterations_loads_with_one_pass(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "encoder_iterations")
    assert model.config.predictor.encoder_iterations == 1 and model.predictor.encoder.iterations == 1
