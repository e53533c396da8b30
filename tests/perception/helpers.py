"""Builders of the perception tests: the tiny model at 32×32 and a streamed context."""

from __future__ import annotations

import json

import torch

from aime_rl.perception import TIMESCALES, CausalPerceiverIO

TIMESCALE_NAMES = list(TIMESCALES)


def tiny(**overrides) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides).eval()


def stream_contexts(model, video, window, timescale="fast", condition=None) -> torch.Tensor:
    stream = model.stream(video.shape[0], window=window, timescale=timescale, condition=condition)
    return torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)


def load_without_predictor_key(directory, key: str) -> CausalPerceiverIO:
    """Save a tiny model to ``directory``, drop ``predictor.key`` from its config.json (a checkpoint written before
    that key existed) and load it back."""
    tiny().save_pretrained(directory)
    path = directory / "config.json"
    config = json.loads(path.read_text())
    del config["predictor"][key]
    path.write_text(json.dumps(config))
    return CausalPerceiverIO.from_pretrained(directory)


def two_clips_that_end_alike(clip: torch.Tensor) -> torch.Tensor:
    """``[2, 3, C, H, W]``: both rows end on the same frame and differ only in the frame before it."""
    last = clip[0, 5]
    return torch.stack(
        [torch.stack([clip[0, 3], clip[0, 4], last]), torch.stack([clip[1, 3], clip[1, 4], last])]
    )


def assert_stream_equals_offline(model, clip: torch.Tensor, window: int | None) -> None:
    """The streamed contexts of ``clip`` equal ``extract_context`` within 1e-4."""
    with torch.no_grad():
        offline = model.extract_context(clip, window=window)
        online = stream_contexts(model, clip, window)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)
