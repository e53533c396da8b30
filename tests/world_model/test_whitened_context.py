"""A world model on a perception model with ``context_whitening`` reads the context the agent sees: whitened."""

from __future__ import annotations

import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import SMALL, sprite_batches


def test_the_world_models_context_is_the_whitened_one_the_stream_hands_out():
    torch.manual_seed(0)
    perceiver = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(8, 3, 32, 32), base_channels=8, context_whitening=True
    ).eval()
    clip = next(sprite_batches(2, 8, 32, seed=3))
    perceiver.predictor.calibrate_whitening([next(sprite_batches(4, 8, 32, seed=s)) for s in range(4)])
    vrnn = VRNN(perceiver, 3, **SMALL).eval()
    with torch.no_grad():
        _, context = vrnn.perceive(clip)
        expected = perceiver.extract_context(clip, window=vrnn.config.context_window)
        raw = perceiver.predictor.frame_context(
            perceiver.predictor.encode_tokens(
                perceiver.predictor.tokenize(clip), 8, vrnn.config.context_window
            )
        )
    assert torch.allclose(context, expected, atol=1e-4)
    assert not torch.allclose(context, raw, atol=1e-2)
