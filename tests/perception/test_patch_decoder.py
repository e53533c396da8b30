"""The patch decoder (``TokenizerConfig.decoder="patch"``): a token cell's pixels come from its own code alone; it
trains, saves, loads and refuses what it cannot do."""

from __future__ import annotations

import json

import pytest
import torch

from aime_rl.perception import VQPTTokenizer, get_preset
from aime_rl.perception.modules.patch_decoder import PatchDecoder
from tests.helpers import sprite_batches


def make(tiny_tokenizer_kwargs, **overrides) -> VQPTTokenizer:
    torch.manual_seed(0)
    return VQPTTokenizer(
        **{**tiny_tokenizer_kwargs, "encoder": "patch", "decoder": "patch", **overrides}
    ).eval()


def test_a_cells_pixels_come_from_its_own_code_alone():
    decoder = PatchDecoder(3, code_dim=16, downsample=8, hidden_channels=32)
    z = torch.randn(1, 16, 2, 4, 4)
    changed = z.clone()
    changed[..., 1, 2] += 1.0  # one cell's code, in both frames
    before, after = decoder(z), decoder(changed)
    assert before.shape == (1, 3, 2, 32, 32)
    moved = (before - after).abs().amax(dim=(0, 1, 2)) > 0  # [32, 32]
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:16, 16:24] = True
    assert torch.equal(moved, expected)


def test_the_patch_decoder_trains_the_whole_tokenizer(tiny_tokenizer_kwargs):
    tokenizer = make(tiny_tokenizer_kwargs).train()
    video = next(sprite_batches(2, 4, 32, seed=9))
    loss = tokenizer.loss(video)
    loss.total.backward()
    assert tokenizer.decoder.mlp[0].weight.grad.abs().sum() > 0
    assert tokenizer.encoder.mlp[0].weight.grad.abs().sum() > 0  # through the straight-through quantizer
    assert loss.reconstructed.shape == video.shape


def test_a_few_steps_lower_the_reconstruction_error(tiny_tokenizer_kwargs):
    tokenizer = make(tiny_tokenizer_kwargs).train()
    video = next(sprite_batches(4, 2, 32, seed=11))
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
    first = tokenizer.loss(video).reconstruction.item()
    for _ in range(30):
        optimizer.zero_grad()
        tokenizer.loss(video).total.backward()
        optimizer.step()
    assert tokenizer.loss(video).reconstruction.item() < 0.5 * first


def test_the_patch_decoder_is_saved_and_loaded(tiny_tokenizer_kwargs, tmp_path):
    tokenizer = make(tiny_tokenizer_kwargs)
    tokenizer.save_pretrained(tmp_path)
    loaded = VQPTTokenizer.from_pretrained(tmp_path)
    video = next(sprite_batches(1, 3, 32, seed=10))
    tokens = tokenizer.encode(video)[0]
    assert loaded.config.decoder == "patch"
    assert torch.equal(loaded.decode(tokens), tokenizer.decode(tokens))


def test_a_config_written_before_decoder_loads_the_unet_decoder(tiny_tokenizer_kwargs, tmp_path):
    VQPTTokenizer(**tiny_tokenizer_kwargs).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    del config["decoder"]
    path.write_text(json.dumps(config))
    assert VQPTTokenizer.from_pretrained(tmp_path).config.decoder == "unet"


def test_an_unknown_decoder_is_refused_by_name(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="decoder must be one of"):
        make(tiny_tokenizer_kwargs, decoder="transformer")


def test_temporal_downsampling_needs_the_unet_decoder(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match='temporal_downsample needs decoder="unet"'):
        make(tiny_tokenizer_kwargs, encoder="unet", temporal_downsample=True)


def test_the_paper_preset_keeps_the_seeds_decoder():
    assert get_preset("paper").tokenizer.decoder == "unet"


def test_the_small_preset_draws_each_cell_from_its_own_code():
    assert get_preset("small").tokenizer.decoder == "patch"
