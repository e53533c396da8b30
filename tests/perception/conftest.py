"""Fixtures of the perception tests: the tiny model at 32×32 and a moving-sprite clip (a test module may define
its own ``model`` / ``clip``)."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from tests.helpers import sprite_batches
from tests.perception.helpers import tiny


@pytest.fixture(scope="module")
def model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return tiny()


@pytest.fixture
def clip() -> torch.Tensor:
    return next(sprite_batches(2, 12, 32, seed=2))
