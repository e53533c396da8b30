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


def moving_object_clips(
    batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token clips ``[B, 8, 4, 4, 2]``: a static random background and one object (code 31) that moves one cell to
    the right per step (wrapping), from a random cell; returns the clips, its row and its first column ``[B]``."""
    tokens = torch.randint(0, 30, (batch, 1, GRID, GRID, 2), generator=generator).repeat(1, 8, 1, 1, 1)
    row, col = torch.randint(0, GRID, (2, batch), generator=generator)
    for t in range(8):
        tokens[torch.arange(batch), t, row, (col + t) % GRID] = 31
    return tokens, row, col


def test_after_a_short_training_the_latents_still_look_at_the_moving_object():
    torch.manual_seed(0)
    predictor = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(8, 3, 32, 32), motion_attention_bias=3.0
    ).predictor
    optimizer = torch.optim.AdamW(predictor.trainable_parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = predictor.forward_tokens(moving_object_clips(16, generator)[0], 4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, row, col = moving_object_clips(32, torch.Generator().manual_seed(2))
    with torch.no_grad():
        now = predictor.eval().attention_to_cells(tokens, 8)[:, 7, 7]  # frame 7's weight on its own cells
    on_object = now[torch.arange(32), row, (col + 7) % GRID]
    on_background = (now.sum(dim=(1, 2)) - on_object) / (GRID * GRID - 1)
    assert on_object.mean() > 3 * on_background.mean()
