"""Fixtures of the training tests: a small replay store of moving sprites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.replay import ReplayStore

FRAME_SIZE = 16


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A replay store of 8 moving-sprite episodes (10 steps, 16×16 frames)."""
    directory = tmp_path_factory.mktemp("replay")
    store = ReplayStore(directory, frame_shape=(FRAME_SIZE, FRAME_SIZE, 3))
    videos = moving_sprites(8, 11, FRAME_SIZE, generator=torch.Generator().manual_seed(0))
    frames = (videos.permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()  # [E, T, H, W, 3]
    for episode in frames:
        n = len(episode) - 1
        store.add_episode(
            episode, np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        )
    return directory
