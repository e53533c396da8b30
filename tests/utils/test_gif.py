"""GIF encoding: header, frame count and size, colours, layouts, bad frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aime_rl.utils.tensorboard import encode_gif
from tests.utils.helpers import decode_gif, distinct_colour_frames


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
