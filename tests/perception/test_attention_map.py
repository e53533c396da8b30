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
    """Videos ``[B, 8, 3, 32, 32]``: a static random background and a white 8×8 square (one token cell) that moves
    one cell to the right per frame (wrapping), from a random cell; returns the videos, its row and first column."""
    video = torch.rand(batch, 1, 3, 32, 32, generator=generator).repeat(1, 8, 1, 1, 1) * 0.5
    row, col = torch.randint(0, GRID, (2, batch), generator=generator)
    for b in range(batch):
        for t in range(8):
            x = int(col[b] + t) % GRID
            video[b, t, :, 8 * row[b] : 8 * row[b] + 8, 8 * x : 8 * x + 8] = 1.0
    return video, row, col


def test_after_a_short_training_the_latents_still_look_at_the_moving_object():
    torch.manual_seed(0)
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), motion_attention_bias=3.0)
    predictor = model.predictor
    optimizer = torch.optim.AdamW(predictor.trainable_parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(15):
        loss = predictor(moving_object_clips(4, generator)[0], num_context_frames=4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    video, row, col = moving_object_clips(8, torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens, motion = predictor.tokenize(video), predictor.motion_marks(video)
        now = predictor.eval().attention_to_cells(tokens, 8, motion=motion)[
            :, 7, 7
        ]  # frame 7 on its own cells
    on_object = now[torch.arange(8), row, (col + 7) % GRID]
    on_background = (now.sum(dim=(1, 2)) - on_object) / (GRID * GRID - 1)
    assert on_object.mean() > 3 * on_background.mean()
