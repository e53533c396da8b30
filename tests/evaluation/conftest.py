"""Fixtures of the probe tests: the tiny model, a small VRNN on it, labelled Catch and Pong frames.

Everything runs on one CPU thread with the tiny perception preset, short Catch episodes and a few hundred Pong
frames (episodes cut at 60 steps so the split by episode has several episodes).
"""

from __future__ import annotations

import pytest
import torch

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import LabelledFrames, atari_ram_labels, catch_labels, collect_labelled
from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model import VRNN
from tests.evaluation.helpers import pong, short_catch
from tests.helpers import SMALL


@pytest.fixture(scope="module")
def model(model_dir) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def vrnn(model) -> VRNN:
    torch.manual_seed(1)
    return VRNN(model, 3, discrete=True, **SMALL).eval()


@pytest.fixture(scope="module")
def catch_data() -> LabelledFrames:
    return collect_labelled(short_catch, catch_labels, 70, seed=3)


@pytest.fixture(scope="module")
def pong_data() -> LabelledFrames:
    return collect_labelled(pong, atari_ram_labels("pong"), 300, seed=0, max_episode_steps=60)
