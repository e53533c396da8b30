"""Fixtures of the world-model tests: the frozen tiny perceiver a VRNN is built on."""

from __future__ import annotations

import pytest
import torch

import aime_rl  # noqa: F401  (registers aime_rl/Catch-v0)
from aime_rl.perception import CausalPerceiverIO


@pytest.fixture(scope="module")
def perceiver() -> CausalPerceiverIO:
    """The tiny preset with 8 base channels (the tokenizer dominates CPU time), untrained and frozen."""
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), base_channels=8).eval()
