"""Builders of the image and GIF tests: flat-colour clips, a GIF decoder."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageSequence


def decode_gif(data: bytes) -> np.ndarray:
    """GIF bytes -> uint8 ``[T, H, W, 3]`` (every frame composited to RGB)."""
    gif = Image.open(io.BytesIO(data))
    return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)])


def distinct_colour_frames(num_frames: int, height: int = 6, width: int = 10) -> torch.Tensor:
    """float ``[T, 3, H, W]``: frame t is filled with a different flat colour."""
    colours = torch.rand(num_frames, 3, generator=torch.Generator().manual_seed(0))
    return colours[:, :, None, None].expand(num_frames, 3, height, width).clone()


def flat_cell_video(batch: int, steps: int, size: int, seed: int) -> torch.Tensor:
    """float ``[B, T, 3, size, size]``: every frame one flat colour (so a GIF stores it exactly)."""
    colours = torch.rand(batch, steps, 3, generator=torch.Generator().manual_seed(seed))
    return colours[..., None, None].expand(batch, steps, 3, size, size).clone()
