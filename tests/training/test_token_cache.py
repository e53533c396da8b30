"""The token cache: the context model trains on tokens computed once, equal to freshly computed ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayStore, ReplayWindowDataset
from aime_rl.training.token_cache import TokenWindowDataset, build_token_cache


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("replay")
    store = ReplayStore(directory, frame_shape=(32, 32, 3))
    video = moving_sprites(4, 12, 32, generator=torch.Generator().manual_seed(3))
    for frames in (video * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy():
        n = len(frames) - 1  # frames include the final observation
        zeros = np.zeros(n, bool)
        store.add_episode(frames, np.zeros(n, np.int64), np.zeros(n, np.float32), zeros, zeros)
    return directory


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(6, 3, 32, 32), use_3d_conv=False).eval()


def windows(store_dir, cache_dir=None):
    kwargs = dict(batch_size=3, length=6, seed=5)
    if cache_dir is None:
        return ReplayWindowDataset(store_dir, **kwargs)
    return TokenWindowDataset(store_dir, cache_dir, **kwargs)


def test_cached_tokens_equal_freshly_computed_ones(store_dir, model, tmp_path):
    build_token_cache(store_dir, model.tokenizer, tmp_path)
    frames_batch, tokens_batch = windows(store_dir)[7], windows(store_dir, tmp_path)[7]
    assert torch.equal(frames_batch["episode_index"], tokens_batch["episode_index"])
    assert torch.equal(frames_batch["start"], tokens_batch["start"])
    with torch.no_grad():
        fresh = model.tokenizer.encode(frames_batch["frames"])[0]
    assert torch.equal(tokens_batch["tokens"], fresh)


def test_training_losses_from_cached_tokens_equal_those_from_frames(store_dir, model, tmp_path):
    build_token_cache(store_dir, model.tokenizer, tmp_path)
    frames, tokens = windows(store_dir)[0]["frames"], windows(store_dir, tmp_path)[0]["tokens"]
    with torch.no_grad():  # eval mode: every future position masked, so both paths are deterministic
        from_frames = model.predictor(frames, num_context_frames=3)
        from_tokens = model.predictor(None, num_context_frames=3, tokens=tokens)
    assert "reconstructed" not in from_tokens
    for key in ("loss", "token_loss", "next_frame_loss", "accuracy"):
        assert torch.allclose(from_frames[key], from_tokens[key], atol=1e-6), key


def test_the_cache_is_rebuilt_for_other_tokenizer_weights_and_topped_up_for_new_episodes(store_dir, tmp_path):
    torch.manual_seed(1)
    first = CausalPerceiverIO.from_preset("tiny", video_shape=(6, 3, 32, 32), use_3d_conv=False).tokenizer
    manifest = build_token_cache(store_dir, first, tmp_path)
    assert len(manifest["episodes"]) == len(ReplayStore.open(store_dir).episodes)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    assert build_token_cache(store_dir, first, tmp_path) == manifest  # nothing to do
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")} == stamp
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    assert build_token_cache(store_dir, first, tmp_path)["tokenizer"] != manifest["tokenizer"]


def test_a_perceptual_term_refuses_cached_tokens(model, monkeypatch):
    monkeypatch.setattr(model.predictor, "perceptual_term_active", lambda: True)  # LPIPS weights present
    with pytest.raises(ValueError, match="perceptual"):
        model.predictor.forward_tokens(torch.zeros(1, 4, 4, 4, 2, dtype=torch.long), 2)
