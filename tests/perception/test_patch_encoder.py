"""The patch encoder (``TokenizerConfig.encoder="patch"``): a token cell's features come from its own pixels alone,
so static cells keep their tokens and identical patches share them; it streams, saves and refuses what it cannot
do."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer, get_preset
from tests.helpers import sprite_batches


def make(tiny_tokenizer_kwargs, **overrides) -> VQPTTokenizer:
    torch.manual_seed(0)
    return VQPTTokenizer(**{**tiny_tokenizer_kwargs, "encoder": "patch", **overrides}).eval()


def features(tokenizer: VQPTTokenizer, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tokenizer._encode_features(video)  # [B, code_dim, T, h, w]


def with_a_changed_corner(video: torch.Tensor) -> torch.Tensor:
    """The clip with the top-left 8×8 pixels of every frame set to white."""
    changed = video.clone()
    changed[..., :8, :8] = 1.0
    return changed


def test_a_cell_far_from_a_change_keeps_its_features(tiny_tokenizer_kwargs):
    video = next(sprite_batches(1, 3, 32, seed=7))
    tokenizer = make(tiny_tokenizer_kwargs)
    before, after = features(tokenizer, video), features(tokenizer, with_a_changed_corner(video))
    others = torch.ones(4, 4, dtype=torch.bool)
    others[0, 0] = False  # every cell but the top-left one, whose pixels changed
    assert torch.equal(before[..., others], after[..., others])
    assert not torch.equal(before[..., 0, 0], after[..., 0, 0])


def test_the_unet_encoder_lets_a_change_reach_far_cells(tiny_tokenizer_kwargs):
    # The cause the patch encoder removes: the UNet's receptive field and per-frame norms span the frame.
    video = next(sprite_batches(1, 3, 32, seed=7))
    tokenizer = make(tiny_tokenizer_kwargs, encoder="unet")
    before, after = features(tokenizer, video), features(tokenizer, with_a_changed_corner(video))
    assert not torch.allclose(before[..., -1, -1], after[..., -1, -1])


def test_identical_patches_get_the_same_tokens_wherever_they_are(tiny_tokenizer_kwargs):
    patch = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    frame = patch.repeat(1, 4, 4)  # [3, 32, 32]: the same patch in all 16 cells
    tokens = make(tiny_tokenizer_kwargs).encode(frame.expand(1, 2, 3, 32, 32))[0]
    assert tokens.flatten(1, 3).unique(dim=1).shape[1] == 1


def test_patch_encoder_streams_the_offline_tokens(tiny_tokenizer_kwargs):
    tokenizer = make(tiny_tokenizer_kwargs, use_3d_conv=True)
    video = next(sprite_batches(2, 5, 32, seed=8))
    stream = tokenizer.stream(batch_size=2)
    streamed = torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)
    assert torch.equal(streamed, tokenizer.encode(video)[0])


def test_patch_encoder_trains_and_decodes_frames(tiny_tokenizer_kwargs):
    tokenizer = make(tiny_tokenizer_kwargs).train()
    video = next(sprite_batches(2, 4, 32, seed=9))
    loss = tokenizer.loss(video)
    loss.total.backward()
    assert tokenizer.encoder.mlp[0].weight.grad.abs().sum() > 0
    assert loss.reconstructed.shape == video.shape


def test_patch_encoder_is_saved_and_loaded(tiny_tokenizer_kwargs, tmp_path):
    tokenizer = make(tiny_tokenizer_kwargs)
    tokenizer.save_pretrained(tmp_path)
    loaded = VQPTTokenizer.from_pretrained(tmp_path)
    video = next(sprite_batches(1, 3, 32, seed=10))
    assert loaded.config.encoder == "patch"
    assert torch.equal(loaded.encode(video)[0], tokenizer.encode(video)[0])


def test_temporal_downsample_needs_the_unet_encoder(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="temporal_downsample needs encoder"):
        make(tiny_tokenizer_kwargs, temporal_downsample=True)


def test_an_unknown_encoder_is_refused_by_name(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="encoder must be one of"):
        make(tiny_tokenizer_kwargs, encoder="vit")


def test_the_seed_model_keeps_the_unet_encoder():
    assert CausalPerceiverIO().config.tokenizer.encoder == "unet"
    assert get_preset("paper").tokenizer.encoder == "unet"


def test_the_small_preset_tokenizes_patches_with_replicated_borders():
    tokenizer = get_preset("small").tokenizer
    assert (tokenizer.encoder, tokenizer.padding, tokenizer.stability_weight) == ("patch", "replicate", 0.0)
