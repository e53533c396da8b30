"""Shared fixtures: tiny models and small generated videos (everything on CPU, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from aime_rl.data import moving_sprites

TINY_TOKENIZER = dict(code_dim=32, num_codes=16, base_channels=8, num_quantizers=4, perceptual_weight=0.0)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_tokenizer_kwargs() -> dict:
    """Arguments for a VQPTTokenizer small enough to train in seconds on a CPU."""
    return dict(TINY_TOKENIZER)


@pytest.fixture
def video() -> torch.Tensor:
    """A batch of moving-sprite videos ``[2, 6, 3, 32, 32]`` in [0, 1]."""
    return moving_sprites(2, 6, 32, generator=torch.Generator().manual_seed(1))


def sprite_batches(batch_size: int, num_frames: int, size: int, seed: int):
    """An endless iterator of moving-sprite batches with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield moving_sprites(batch_size, num_frames, size, generator=g)
