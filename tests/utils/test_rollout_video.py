"""Rollout video frames: the truth / model / |error| grid with phase-coloured borders, and its header strip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aime_rl.utils.tensorboard import (
    CONTEXT_BORDER_COLOR,
    PREDICTED_BORDER_COLOR,
    label_rollout_frames,
    rollout_grid,
)
from tests.utils.helpers import flat_cell_video


def test_rollout_grid_shape_and_rows():
    batch, steps, height, width, border = 3, 5, 4, 6, 1
    truth = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(4))
    model = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(5))
    grid = rollout_grid(truth, model, context_frames=2, border=border)
    cell_h, cell_w = height + 2 * border, width + 2 * border
    assert grid.shape == (steps, 3, 3 * cell_h, batch * cell_w)
    assert grid.dtype == torch.float32
    assert grid.min() >= 0.0 and grid.max() <= 1.0

    b, t = 2, 4
    top, left = border, b * cell_w + border

    def cell(row: int) -> torch.Tensor:
        y = row * cell_h + top
        return grid[t, :, y : y + height, left : left + width]

    torch.testing.assert_close(cell(0), truth[b, t])
    torch.testing.assert_close(cell(1), model[b, t])
    torch.testing.assert_close(cell(2), (truth[b, t] - model[b, t]).abs())


def test_rollout_grid_error_row_known_pixel():
    truth = torch.zeros(1, 2, 3, 2, 2)
    model = torch.zeros(1, 2, 3, 2, 2)
    truth[0, 1, :, 0, 1] = torch.tensor([0.9, 0.2, 0.5])
    model[0, 1, :, 0, 1] = torch.tensor([0.4, 0.7, 0.5])
    grid = rollout_grid(truth, model, context_frames=1, border=0)
    error_pixel = grid[1, :, 2 * 2 + 0, 1]  # error row starts at y = 2 * H
    torch.testing.assert_close(error_pixel, torch.tensor([0.5, 0.5, 0.0]))


def test_rollout_grid_marks_context_and_predicted_steps():
    truth = torch.full((2, 4, 3, 3, 3), 0.5)
    grid = rollout_grid(truth, truth.clone(), context_frames=3, border=1)
    context_colour = torch.tensor(CONTEXT_BORDER_COLOR)
    predicted_colour = torch.tensor(PREDICTED_BORDER_COLOR)
    for t in range(4):
        expected = context_colour if t < 3 else predicted_colour
        # the grid's outer frame and the gaps between cells are all in the step's phase colour
        torch.testing.assert_close(grid[t, :, 0, :], expected[:, None].expand(3, grid.shape[-1]))
        torch.testing.assert_close(grid[t, :, :, 0], expected[:, None].expand(3, grid.shape[-2]))
        torch.testing.assert_close(grid[t, :, 4, 4], expected)  # bottom-left corner of cell (0, 0)
        torch.testing.assert_close(grid[t, :, 1, 1], torch.full((3,), 0.5))  # inside cell (0, 0)


def test_rollout_grid_accepts_uint8_and_clips_model():
    truth = torch.full((1, 2, 3, 2, 2), 255, dtype=torch.uint8)
    model = torch.full((1, 2, 3, 2, 2), 1.5)
    grid = rollout_grid(truth, model, context_frames=0, border=0)
    assert (grid[:, :, 0:4] == 1.0).all()  # truth and clipped model rows
    assert (grid[:, :, 4:6] == 0.0).all()  # no error once clipped


@pytest.mark.parametrize(
    ("truth_shape", "model_shape", "context_frames", "match"),
    [
        ((2, 4, 3, 4, 4), (2, 4, 3, 4, 4), 5, "context_frames"),
        ((2, 4, 3, 4, 4), (2, 4, 3, 4, 4), -1, "context_frames"),
        ((2, 4, 3, 4, 4), (1, 4, 3, 4, 4), 2, "model"),
        ((2, 4, 1, 4, 4), (2, 4, 1, 4, 4), 2, "truth"),
        ((4, 3, 4, 4), (4, 3, 4, 4), 2, "truth"),
    ],
)
def test_rollout_grid_rejects_bad_inputs(truth_shape, model_shape, context_frames, match):
    with pytest.raises(ValueError, match=match):
        rollout_grid(torch.rand(truth_shape), torch.rand(model_shape), context_frames)


def test_label_rollout_frames_widens_narrow_videos():
    grid = rollout_grid(flat_cell_video(1, 3, 4, 0), flat_cell_video(1, 3, 4, 1), context_frames=1)
    labelled = label_rollout_frames(grid, context_frames=1)
    assert labelled.dtype == np.uint8 and labelled.shape[0] == 3
    assert labelled.shape[2] > grid.shape[-1]  # 6 px is too narrow for a word: padded on the right
    np.testing.assert_array_equal(labelled[:, -grid.shape[-2] :, : grid.shape[-1]], decode_grid(grid))
    with pytest.raises(ValueError, match="context_frames"):
        label_rollout_frames(grid, context_frames=4)


def decode_grid(grid: torch.Tensor) -> np.ndarray:
    return (grid * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
