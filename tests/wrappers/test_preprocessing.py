"""Frame preprocessing of the context wrappers: model frames (channels, resizing) and where frames come from."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.wrappers.preprocessing import frame_source_for, frame_source_from, to_model_frames
from tests.wrappers.helpers import short_catch


def test_to_model_frames_shapes_channels_and_resizing():
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    frames = to_model_frames(rgb, (64, 64))
    assert frames.dtype == torch.uint8 and frames.shape == (2, 3, 64, 64)
    assert torch.equal(frames, torch.from_numpy(rgb).permute(0, 3, 1, 2))  # same size: no resampling
    assert to_model_frames(rgb[0], (64, 64)).shape == (1, 3, 64, 64)
    big = np.full((96, 96, 3), 200, dtype=np.uint8)
    assert torch.all(to_model_frames(big, (64, 64)) == 200)  # antialiased resize keeps a flat colour
    gray = rgb[0, :, :, 0]
    for frame in (gray, gray[..., None]):
        expanded = to_model_frames(frame, (64, 64))
        assert expanded.shape == (1, 3, 64, 64) and torch.equal(expanded[:, 0], expanded[:, 2])
    rgba = np.concatenate([rgb[0], np.zeros((64, 64, 1), np.uint8)], axis=-1)  # or 4 stacked grey frames
    with pytest.raises(ValueError, match="got 4 channels: stacked frames and RGBA frames are not supported"):
        to_model_frames(rgba, (64, 64))
    with pytest.raises(ValueError, match="uint8"):
        to_model_frames(rgb.astype(np.float32), (64, 64))
    with pytest.raises(ValueError, match="shape"):
        to_model_frames(np.zeros((2, 64, 64, 5), np.uint8), (64, 64))


def test_frame_source_from_observation_or_render():
    assert frame_source_for(short_catch()) == "observation"
    assert frame_source_for(gym.make("aime_rl/CatchState-v0", render_mode="rgb_array")) == "render"
    with pytest.raises(ValueError, match="render_mode"):
        frame_source_for(gym.make("aime_rl/CatchState-v0"))


@pytest.mark.parametrize(
    ("space", "hint"),
    [
        (gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), r"transpose \[C, H, W\] to \[H, W, C\]"),
        (gym.spaces.Box(0.0, 1.0, (64, 64, 3), np.float32), "scale float images"),
    ],
    ids=["channels first", "float"],
)
def test_frames_in_another_layout_say_how_to_fix_them(space, hint):
    with pytest.raises(ValueError, match=hint):
        frame_source_from(space, None, "env X")
