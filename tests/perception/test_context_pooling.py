"""``context_pooling``: how a frame's N latents become its context — their mean (the seed) or one linear map of all
N side by side ("projection", the "small" preset)."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO, get_preset
from tests.perception.helpers import load_without_predictor_key, stream_contexts, tiny


def test_projection_pooling_keeps_which_latent_holds_what():
    model = tiny(context_pooling="projection")
    latents = torch.randn(2, 8, 32)  # [B, N, D]
    swapped = latents[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        assert not torch.allclose(
            model.predictor.frame_context(latents), model.predictor.frame_context(swapped)
        )
        model.predictor.context_projection = None  # the seed's mean forgets it
        assert torch.allclose(
            model.predictor.frame_context(latents), model.predictor.frame_context(swapped), atol=1e-5
        )


def test_projection_pooling_gives_one_context_of_d_channels_per_frame(clip):
    model = tiny(context_pooling="projection")
    with torch.no_grad():
        context = model.extract_context(clip)
    assert context.shape == (2, 12, 32)
    assert (
        model.predictor.context_projection.in_features == 8 * 32
    )  # the tiny preset's 8 latents of 32 channels


@pytest.mark.parametrize("window", [None, 5])
def test_stream_equals_offline_with_projection_pooling(clip, window):
    torch.manual_seed(0)
    model = tiny(context_pooling="projection", motion_attention_bias=1.0)
    with torch.no_grad():
        offline = model.extract_context(clip, window=window)
        online = stream_contexts(model, clip, window)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_a_model_with_projection_pooling_saves_and_loads(tmp_path, clip):
    model = tiny(context_pooling="projection")
    model.save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model").eval()
    assert loaded.predictor.config.context_pooling == "projection"
    with torch.no_grad():
        assert torch.equal(loaded.extract_context(clip), model.extract_context(clip))


def test_a_config_written_before_context_pooling_loads_with_the_mean(tmp_path):
    assert (
        load_without_predictor_key(tmp_path / "model", "context_pooling").predictor.context_projection is None
    )


def test_an_unknown_context_pooling_is_refused_by_name():
    with pytest.raises(ValueError, match="context_pooling.*'max'"):
        tiny(context_pooling="max")


def test_the_small_preset_projects_and_the_paper_preset_keeps_the_seeds_mean():
    assert get_preset("small").predictor.context_pooling == "projection"
    assert get_preset("paper").predictor.context_pooling == "mean"


def test_the_stream_keeps_the_latents_its_projected_context_came_from(clip):
    model = tiny(context_pooling="projection")
    stream = model.stream(2, window=4)
    with torch.no_grad():
        for t in range(3):
            context = stream.step(clip[:, t])
        assert stream.last_latents.shape == (2, 8, 32)  # [B, N, D]
        assert torch.allclose(model.predictor.frame_context(stream.last_latents), context, atol=1e-5)
        flat = stream.last_latents.flatten(1)  # what the "latents" probe representation stores per frame
        assert torch.allclose(model.predictor.frame_context(flat.unflatten(1, (8, 32))), context, atol=1e-5)
        assert torch.equal(stream.select(torch.tensor([1])).last_latents, stream.last_latents[1:])
