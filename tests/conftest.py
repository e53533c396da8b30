"""Shared fixtures: tiny models, small generated videos (CPU only, nothing downloaded).

Plain helpers (constants, builders, the torchrun helpers) live in :mod:`tests.helpers`; a subfolder's
``conftest.py`` holds the fixtures of that folder only.
"""

from __future__ import annotations

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO
from tests.helpers import TINY_TOKENIZER


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for every test (module fixtures included): CI has 2 shared cores, and tiny models run
    faster on one thread than on two oversubscribed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_a_temporary_folder(tmp_path_factory):
    """SB3 makes a folder ``$TMPDIR/SB3-<time>`` for every ``learn()`` without a TensorBoard log (and every
    ``configure(None, ...)``): point them at the session's temporary folder, which pytest cleans up."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random CausalPerceiverIO checkpoint (64×64 frames, context_dim 32) for the env-wrapper tests."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("perceiver")
    CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64)).save_pretrained(directory)
    return str(directory)


@pytest.fixture
def tiny_tokenizer_kwargs() -> dict:
    """Arguments for a VQPTTokenizer small enough to train in seconds on a CPU."""
    return dict(TINY_TOKENIZER)


@pytest.fixture
def video() -> torch.Tensor:
    """A batch of moving-sprite videos ``[2, 6, 3, 32, 32]`` in [0, 1]."""
    return moving_sprites(2, 6, 32, generator=torch.Generator().manual_seed(1))
