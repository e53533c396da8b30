"""Token stability: a cell whose pixels did not change keeps its token (the tokenizer's ``stability_weight``)."""

from __future__ import annotations

import math

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import VQPTTokenizer
from aime_rl.perception.losses import static_cells, temporal_stability, token_stability
from aime_rl.training.perception import held_out_token_stability


def one_ball_clip(frames: int = 4, size: int = 32) -> torch.Tensor:
    """``[1, T, 3, H, W]``: a grey background with one white 2×2 ball moving right by 8 pixels (one cell) a frame."""
    video = torch.full((1, frames, 3, size, size), 0.4)
    for t in range(frames):
        video[0, t, :, 4:6, 8 * t + 1 : 8 * t + 3] = 1.0
    return video


def test_static_cells_are_the_cells_whose_pixels_did_not_change():
    static = static_cells(one_ball_clip(), (4, 4))
    assert static.shape == (1, 3, 4, 4)
    for t in range(3):  # the ball leaves cell (0, t) and enters cell (0, t + 1)
        changed = {(0, t), (0, t + 1)}
        assert {(i, j) for i in range(4) for j in range(4) if not static[0, t, i, j]} == changed


def test_temporal_stability_counts_only_the_static_cells():
    static = static_cells(one_ball_clip(), (4, 4))
    features = torch.randn(1, 8, 1, 4, 4).repeat(1, 1, 4, 1, 1)  # the same features in every frame
    assert temporal_stability(features, static) == 0
    moved = features.clone()
    moved[:, :, 1, 0, 1] += 1.0  # frame 1 of the cell the ball enters, then leaves: not penalised
    assert temporal_stability(moved, static) == 0
    moved[:, :, 1, 3, 3] += 1.0  # a change in a static cell: penalised
    assert temporal_stability(moved, static) > 0


def test_token_stability_is_the_share_of_static_cells_that_kept_their_tokens():
    static = static_cells(one_ball_clip(), (4, 4))  # 3 steps × 14 static cells
    tokens = torch.zeros(1, 4, 4, 4, 2, dtype=torch.long)
    assert token_stability(tokens, static) == 1.0
    tokens[0, 2, 3, 3, 1] = 7  # one static cell flips at step 2 (and back at step 3): 2 of 42 changed
    assert token_stability(tokens, static) == pytest.approx(40 / 42)


def test_held_out_token_stability_is_nan_for_a_single_frame():
    video = one_ball_clip(frames=1)
    assert math.isnan(held_out_token_stability(torch.zeros(1, 1, 4, 4, 2, dtype=torch.long), video))


def test_the_tokenizer_adds_the_term_only_when_weighted(tiny_tokenizer_kwargs):
    video = moving_sprites(2, 4, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = VQPTTokenizer(**tiny_tokenizer_kwargs).eval()
    torch.manual_seed(0)
    weighted = VQPTTokenizer(**tiny_tokenizer_kwargs, stability_weight=3.0).eval()
    with torch.no_grad():
        a, b = plain.loss(video), weighted.loss(video)
    assert a["stability"] == 0 and b["stability"] > 0
    assert (b["total"] - a["total"]).item() == pytest.approx(3.0 * b["stability"].item(), rel=1e-4)


def test_a_negative_stability_weight_is_refused(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="stability_weight"):
        VQPTTokenizer(**tiny_tokenizer_kwargs, stability_weight=-1.0)


def train_stability(kwargs: dict, stability_weight: float, steps: int = 20) -> float:
    """Train a tiny per-frame tokenizer on sprite clips; its token stability on held-out clips."""
    torch.manual_seed(0)
    tokenizer = VQPTTokenizer(**kwargs, use_3d_conv=False, stability_weight=stability_weight)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        video = moving_sprites(4, 4, 32, num_sprites=1, max_speed=2.0, generator=g)
        optimizer.zero_grad()
        tokenizer.loss(video)["total"].backward()
        optimizer.step()
    tokenizer.eval()
    held_out = moving_sprites(
        8, 4, 32, num_sprites=1, max_speed=2.0, generator=torch.Generator().manual_seed(9)
    )
    with torch.no_grad():
        tokens = tokenizer.encode(held_out)[0]
    return held_out_token_stability(tokens, held_out)


def test_the_stability_term_keeps_the_tokens_of_static_cells(tiny_tokenizer_kwargs):
    assert train_stability(tiny_tokenizer_kwargs, 10.0) > train_stability(tiny_tokenizer_kwargs, 0.0) + 0.1
