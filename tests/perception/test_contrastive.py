"""The predictor's ``contrastive_weight``: a global-local InfoNCE that teaches the context what tells clips apart."""

from __future__ import annotations

import math

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.losses import global_local_infonce
from tests.perception.helpers import load_without_predictor_key


def tiny(**overrides) -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides)


def test_keys_that_are_the_same_in_every_clip_teach_nothing():
    queries = torch.randn(4, 2, 8, requires_grad=True)
    keys = torch.randn(1, 2, 5, 8).expand(4, -1, -1, -1)  # a static background: every clip alike
    loss = global_local_infonce(queries, keys)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4), rel=1e-5)
    assert queries.grad.abs().max() < 1e-6


def test_a_query_that_matches_its_own_clip_scores_low():
    keys = torch.randn(4, 2, 5, 8)
    own = global_local_infonce(keys.mean(2), keys)  # each clip's query points at its own keys
    shuffled = global_local_infonce(keys.mean(2).roll(1, dims=0), keys)
    assert own < math.log(4) < shuffled


def test_the_term_is_off_by_default_and_counts_when_weighted():
    video = moving_sprites(4, 8, 32, generator=torch.Generator().manual_seed(0))
    off, on = tiny(), tiny(contrastive_weight=0.5)
    assert off.predictor.contrastive_proj is None
    torch.manual_seed(1)
    a = off(video, num_context_frames=4)
    torch.manual_seed(1)
    b = on(video, num_context_frames=4)
    assert a["contrastive_loss"] == 0 and b["contrastive_loss"] > 0
    torch.testing.assert_close(b["loss"], a["loss"] + 0.5 * b["contrastive_loss"])
    b["contrastive_loss"].backward()
    assert on.predictor.contrastive_proj.weight.grad.abs().sum() > 0


def test_a_negative_contrastive_weight_is_refused():
    with pytest.raises(ValueError, match="contrastive_weight"):
        tiny(contrastive_weight=-1.0)


def test_a_nested_config_written_before_the_contrastive_term_loads(tmp_path):
    loaded = load_without_predictor_key(tmp_path / "model", "contrastive_weight")
    assert loaded.predictor.config.contrastive_weight == 0.0
