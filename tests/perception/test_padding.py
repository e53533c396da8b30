"""The tokenizer's spatial padding (``TokenizerConfig.padding``): replicated borders keep a uniform background free
of position, stream like the offline pass, save and load, and the seed's zeros stay the default."""

from __future__ import annotations

import json

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer, get_preset
from tests.helpers import sprite_batches


def make(tiny_tokenizer_kwargs, **overrides) -> VQPTTokenizer:
    torch.manual_seed(0)
    return VQPTTokenizer(**{**tiny_tokenizer_kwargs, **overrides}).eval()


def uniform_clip(value: float = 0.3) -> torch.Tensor:
    return torch.full((1, 2, 3, 32, 32), value)


def spread_over_cells(tokenizer: VQPTTokenizer, video: torch.Tensor) -> float:
    """Largest standard deviation, over the token grid, of any feature channel: 0 when every cell looks alike."""
    with torch.no_grad():
        features = tokenizer._encode_features(video)  # [B, code_dim, T, h, w]
    return features.flatten(-2).std(-1).max().item()


def test_replicated_borders_give_every_cell_of_a_uniform_frame_the_same_features(tiny_tokenizer_kwargs):
    tokenizer = make(tiny_tokenizer_kwargs, padding="replicate")
    assert spread_over_cells(tokenizer, uniform_clip()) == 0.0
    tokens = tokenizer.encode(uniform_clip())[0]
    assert tokens.flatten(2, 3).unique(dim=2).shape[2] == 1  # one token tuple for the whole grid


def test_zero_padding_writes_the_position_into_a_uniform_frame(tiny_tokenizer_kwargs):
    # The cause the option removes: with the seed's zeros, the border shows through on a uniform frame.
    assert spread_over_cells(make(tiny_tokenizer_kwargs), uniform_clip()) > 1e-3


@pytest.mark.parametrize("use_3d_conv", [True, False])
def test_replicate_padding_streams_the_offline_tokens(tiny_tokenizer_kwargs, use_3d_conv):
    tokenizer = make(tiny_tokenizer_kwargs, padding="replicate", use_3d_conv=use_3d_conv, patch_size=2)
    video = next(sprite_batches(2, 6, 32, seed=5))
    stream = tokenizer.stream(batch_size=2)
    streamed = torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)
    assert torch.equal(streamed, tokenizer.encode(video)[0])


def test_padding_is_saved_and_loaded(tiny_tokenizer_kwargs, tmp_path):
    tokenizer = make(tiny_tokenizer_kwargs, padding="replicate")
    tokenizer.save_pretrained(tmp_path)
    loaded = VQPTTokenizer.from_pretrained(tmp_path)
    assert loaded.config.padding == "replicate"
    video = next(sprite_batches(1, 3, 32, seed=6))
    assert torch.equal(loaded.encode(video)[0], tokenizer.encode(video)[0])


def test_a_tokenizer_saved_before_the_key_loads_with_zeros(tiny_tokenizer_kwargs, tmp_path):
    make(tiny_tokenizer_kwargs).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["padding"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert VQPTTokenizer.from_pretrained(tmp_path).config.padding == "zeros"


def test_an_unknown_padding_is_refused_by_name(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="padding must be one of"):
        VQPTTokenizer(**{**tiny_tokenizer_kwargs, "padding": "reflect"})


def test_the_seed_model_pads_with_zeros():
    assert CausalPerceiverIO().config.tokenizer.padding == "zeros"
    assert get_preset("paper").tokenizer.padding == "zeros"
