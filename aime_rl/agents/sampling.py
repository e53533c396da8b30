"""Replay windows for the perception callbacks: is a window available, sample windows at the model's frame size,
and run a block under a seeded torch RNG that leaves the agent's random stream untouched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aime_rl.replay.store import ReplayStore
from aime_rl.training.perception import as_unit_float

__all__ = ["device_of", "has_windows", "isolated_rng", "sample_frames"]


def sample_frames(
    store: ReplayStore,
    batch_size: int,
    length: int,
    rng: np.random.Generator,
    recency: float | None,
    size: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """``batch_size`` windows of ``length`` frames, float ``[B, T, 3, H, W]`` in [0, 1] at the model's ``size``."""
    frames = store.sample_windows(batch_size, length, rng, recency)["frames"].to(device)
    video = as_unit_float(frames)
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    flat = F.interpolate(video.flatten(0, 1), size=size, mode="bilinear", antialias=True, align_corners=False)
    return flat.clamp(0, 1).unflatten(0, video.shape[:2])


def has_windows(store: ReplayStore, length: int) -> bool:
    """True when some episode of ``store`` holds a window of ``length`` frames (picks up new episodes first)."""
    if store.read_only:
        store.refresh()
    return any(len(episode) >= length for episode in store.episodes)


@contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG seeded to ``seed`` and restore it after, so the agent's random stream
    is the same with or without the callback."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter."""
    return next(module.parameters()).device
