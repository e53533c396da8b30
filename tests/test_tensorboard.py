"""GIF summaries, rollout grids and image grids land in the event file and decode to what was written."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.tensorboard import (
    CONTEXT_BORDER_COLOR,
    PREDICTED_BORDER_COLOR,
    add_gif,
    add_image_grid,
    add_rollout_gif,
    add_text_once,
    encode_gif,
    read_event_images,
    rollout_grid,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_gif(data: bytes) -> np.ndarray:
    """GIF bytes -> uint8 ``[T, H, W, 3]`` (every frame composited to RGB)."""
    gif = Image.open(io.BytesIO(data))
    return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)])


def distinct_colour_frames(num_frames: int, height: int = 6, width: int = 10) -> torch.Tensor:
    """float ``[T, 3, H, W]``: frame t is filled with a different flat colour."""
    colours = torch.rand(num_frames, 3, generator=torch.Generator().manual_seed(0))
    return colours[:, :, None, None].expand(num_frames, 3, height, width).clone()


@pytest.fixture
def writer(tmp_path):
    summary_writer = SummaryWriter(log_dir=str(tmp_path))
    yield summary_writer
    summary_writer.close()


# ------------------------------------------------------------------------------------------------ encode_gif


def test_encode_gif_header_frame_count_and_size():
    frames = distinct_colour_frames(5, height=6, width=10)
    data = encode_gif(frames, fps=10)
    assert data.startswith(b"GIF89a")
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 5
    assert gif.size == (10, 6)  # Pillow: (width, height)
    assert gif.info["loop"] == 0
    assert gif.info["duration"] == 100


def test_encode_gif_preserves_colours():
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    green = torch.zeros(1, 3, 4, 4)
    green[:, 1] = 1.0
    mixed = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))  # 16 colours: stored exactly
    frames = torch.cat([red, green, mixed])
    decoded = decode_gif(encode_gif(frames))
    assert (decoded[0] == [255, 0, 0]).all()
    assert (decoded[1] == [0, 255, 0]).all()
    expected_mixed = (mixed[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(decoded[2], expected_mixed)


def test_encode_gif_many_colours_are_approximated_closely():
    ramp = torch.linspace(0, 1, 64)
    frame = torch.stack([ramp.expand(32, 64), ramp[:32, None].expand(32, 64), 1 - ramp.expand(32, 64)])
    frames = torch.stack([frame, frame.flip(-1)])
    decoded = decode_gif(encode_gif(frames)).astype(int)
    expected = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(decoded - expected).mean() < 4


def test_encode_gif_accepts_uint8_channels_last_numpy():
    frames = np.zeros((3, 5, 7, 3), dtype=np.uint8)
    for t in range(3):
        frames[t, :, :, t] = 200
    data = encode_gif(frames)
    decoded = decode_gif(data)
    assert decoded.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(decoded, frames)


def test_encode_gif_clips_out_of_range_floats():
    frames = torch.full((2, 3, 4, 4), 1.7)
    frames[1] = -0.3
    decoded = decode_gif(encode_gif(frames))
    assert (decoded[0] == 255).all()
    assert (decoded[1] == 0).all()


@pytest.mark.parametrize(
    "frames",
    [
        torch.rand(3, 4, 4),  # rank 3
        torch.rand(2, 4, 4, 3),  # float channels last
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8),  # uint8 channels first
        torch.rand(2, 1, 4, 4),  # one channel
        torch.rand(0, 3, 4, 4),  # no frames
        torch.zeros(2, 3, 4, 4, dtype=torch.int64),  # integer, not uint8
        torch.full((2, 3, 4, 4), float("nan")),
        [[0.0]],  # not an array
    ],
)
def test_encode_gif_rejects_bad_frames(frames):
    with pytest.raises(ValueError, match="frames"):
        encode_gif(frames)


def test_encode_gif_rejects_non_positive_fps():
    with pytest.raises(ValueError, match="fps"):
        encode_gif(torch.rand(2, 3, 4, 4), fps=0)


# ----------------------------------------------------------------------------------------- event round trips


def test_add_gif_lands_in_event_file(writer, tmp_path):
    frames = distinct_colour_frames(7, height=8, width=12)
    add_gif(writer, "video/clip", frames, global_step=3)
    add_gif(writer, "video/clip", frames[:4], global_step=4)
    writer.flush()
    images = read_event_images(tmp_path)
    assert list(images) == ["video/clip"]
    first, second = images["video/clip"]
    assert first.startswith(b"GIF89a")
    assert Image.open(io.BytesIO(first)).n_frames == 7
    assert Image.open(io.BytesIO(first)).size == (12, 8)
    assert Image.open(io.BytesIO(second)).n_frames == 4


def test_add_gif_bad_frames_raise_before_writing(writer, tmp_path):
    with pytest.raises(ValueError, match="frames"):
        add_gif(writer, "video/bad", torch.rand(2, 4, 4), global_step=0)
    writer.flush()
    assert read_event_images(tmp_path) == {}


def test_add_rollout_gif_round_trip(writer, tmp_path):
    batch, steps, height, width = 2, 6, 8, 8
    truth = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(2))
    model = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(3))
    add_rollout_gif(writer, "world_model/open_loop", truth, model, context_frames=2, global_step=10)
    writer.flush()
    (data,) = read_event_images(tmp_path)["world_model/open_loop"]
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == steps
    assert gif.size == (batch * (width + 2), 3 * (height + 2))


def test_add_image_grid_is_png(writer, tmp_path):
    images = torch.rand(10, 3, 8, 8)
    add_image_grid(writer, "recon/grid", images, global_step=1, nrow=4)
    writer.flush()
    (data,) = read_event_images(tmp_path)["recon/grid"]
    assert data.startswith(PNG_MAGIC)
    png = Image.open(io.BytesIO(data))
    # make_grid: 4 columns x 3 rows of 8x8 images with 2-px padding around each
    assert png.size == (4 * 10 + 2, 3 * 10 + 2)


def test_add_image_grid_rejects_bad_images(writer):
    with pytest.raises(ValueError, match="images"):
        add_image_grid(writer, "recon/grid", torch.rand(10, 8, 8), global_step=1)


def test_add_text_once_is_not_an_image(writer, tmp_path):
    add_text_once(writer, "status/lpips", "disabled: no backbone weights")
    writer.flush()
    assert read_event_images(tmp_path) == {}


def test_read_event_images_rejects_missing_dir(tmp_path):
    with pytest.raises(ValueError, match="logdir"):
        read_event_images(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- rollout_grid


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
