"""The predictor's ``change_weight``: tokens that changed since the frame before weigh as much as the static rest."""

from __future__ import annotations

import json

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO


def tiny(**overrides) -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides)


def test_the_changed_positions_are_averaged_on_their_own():
    predictor = tiny(change_weight=2.0).predictor
    logits = torch.zeros(4, 1, 3)  # 4 positions, 1 head, 3 codes: uniform predictions ...
    logits[:3, 0, 0] = 20.0  # ... except three confident, right ones
    target = torch.zeros(4, 1, dtype=torch.long)
    changed = torch.tensor([False, False, False, True])  # the one wrong position is the one that changed
    plain = predictor._cross_entropy(logits, target)
    weighted = predictor._cross_entropy(logits, target, changed)
    uniform = predictor._cross_entropy(logits[3:], target[3:])
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * uniform.item(), rel=1e-5)


def test_without_changed_positions_nothing_is_added():
    predictor = tiny(change_weight=2.0).predictor
    logits, target = torch.randn(5, 2, 4), torch.randint(0, 4, (5, 2))
    none_changed = torch.zeros(5, dtype=torch.bool)
    assert predictor._cross_entropy(logits, target, none_changed) == predictor._cross_entropy(logits, target)


def test_the_weight_raises_the_training_loss_of_a_moving_clip():
    video = moving_sprites(2, 8, 32, generator=torch.Generator().manual_seed(0))
    plain, weighted = tiny(), tiny(change_weight=2.0)
    torch.manual_seed(1)
    a = plain(video, num_context_frames=4)
    torch.manual_seed(1)
    b = weighted(video, num_context_frames=4)
    assert b["token_loss"] > a["token_loss"] and b["next_frame_loss"] > a["next_frame_loss"]


def test_a_negative_change_weight_is_refused():
    with pytest.raises(ValueError, match="change_weight"):
        tiny(change_weight=-1.0)


def test_a_nested_config_written_before_change_weight_loads(tmp_path):
    tiny(change_weight=3.0).save_pretrained(tmp_path / "model")
    assert CausalPerceiverIO.from_pretrained(tmp_path / "model").predictor.config.change_weight == 3.0
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    del config["predictor"]["change_weight"]
    path.write_text(json.dumps(config))
    assert CausalPerceiverIO.from_pretrained(tmp_path / "model").predictor.config.change_weight == 0.0
