"""Builders of the perception tests: the tiny model at 32×32 and a streamed context."""

from __future__ import annotations

import torch

from aime_rl.perception import TIMESCALES, CausalPerceiverIO

TIMESCALE_NAMES = list(TIMESCALES)


def tiny(**overrides) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides).eval()


def stream_contexts(model, video, window, timescale="fast", condition=None) -> torch.Tensor:
    stream = model.stream(video.shape[0], window=window, timescale=timescale, condition=condition)
    return torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)
