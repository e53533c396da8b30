"""Where the latents look: ``PerceiverTokenPredictor.attention_to_cells`` (causal, windowed, sums to ≤ 1)."""

from __future__ import annotations

import torch

from aime_rl.perception import CausalPerceiverIO

STEPS, GRID = 5, 4


def tiny_predictor():
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32)).predictor.eval()


def random_tokens(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 32, (batch, STEPS, GRID, GRID, 2), generator=torch.Generator().manual_seed(0))


def test_each_frame_spreads_at_most_all_its_weight_over_the_cells():
    cells = tiny_predictor().attention_to_cells(random_tokens(), STEPS)
    assert cells.shape == (2, STEPS, STEPS, GRID, GRID)  # [B, T, T', h, w]
    total = cells.sum(dim=(2, 3, 4))
    assert bool((total > 0).all()) and bool((total <= 1 + 1e-5).all())  # the rest is on the null key


def test_no_frame_looks_at_later_tokens():
    cells = tiny_predictor().attention_to_cells(random_tokens(), STEPS)
    later = torch.ones(STEPS, STEPS).triu(1).bool()  # [t, s] with s > t
    assert bool((cells[:, later] == 0).all())


def test_the_window_hides_older_tokens():
    cells = tiny_predictor().attention_to_cells(random_tokens(), STEPS, window=2)
    older = torch.ones(STEPS, STEPS).tril(-2).bool()  # [t, s] with s ≤ t − 2
    seen = torch.ones(STEPS, STEPS).tril().bool() & ~older  # s = t − 1 and s = t
    assert bool((cells[:, older] == 0).all())
    assert bool((cells[:, seen].sum(dim=(-1, -2)) > 0).all())
