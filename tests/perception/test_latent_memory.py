"""``latent_memory``: each frame's latents attend to the latents of the frames before it (a bounded memory).

The stream keeps the memory keys and values of the last frames and must equal the offline pass; the memory reaches exactly
``latent_memory`` frames beyond the token window; a reset row starts without memory, as a fresh stream does.
"""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import (
    assert_stream_equals_offline,
    load_without_predictor_key,
    stream_contexts,
    tiny,
)


@pytest.mark.parametrize("window", [None, 3])
def test_stream_equals_offline_with_a_memory(clip, window):
    torch.manual_seed(0)
    model = tiny(latent_memory=2, recency_bias=1.0, motion_attention_bias=1.0)
    assert_stream_equals_offline(model, clip, window)


def test_stream_equals_offline_with_a_memory_and_temporal_downsampling(clip):
    torch.manual_seed(0)
    model = tiny(latent_memory=3, temporal_downsample=True, encoder_iterations=2)
    assert_stream_equals_offline(model, clip, 4)


def context_at_last_frame(model, clip, window, changed_frame: int | None) -> torch.Tensor:
    """The offline context of ``clip``'s last frame, with frame ``changed_frame`` replaced by noise (or none)."""
    clip = clip.clone()
    if changed_frame is not None:
        noise = torch.Generator().manual_seed(9)
        clip[:, changed_frame] = torch.rand(clip[:, changed_frame].shape, generator=noise)
    with torch.no_grad():
        return model.extract_context(clip, window=window)[:, -1]


@pytest.mark.parametrize("memory", [0, 1, 2])
def test_the_memory_reaches_that_many_frames_beyond_the_window_and_no_further(clip, memory):
    torch.manual_seed(0)
    # per-frame tokens: the window alone bounds which frames a frame's tokens saw
    model = tiny(latent_memory=memory, use_3d_conv=False)
    clip, window = clip[:, :8], 2
    last = clip.shape[1] - 1
    reference = context_at_last_frame(model, clip, window, None)
    oldest_seen = last - (window - 1) - memory
    seen = context_at_last_frame(model, clip, window, oldest_seen)
    unseen = context_at_last_frame(model, clip, window, oldest_seen - 1)
    assert not torch.allclose(seen, reference, atol=1e-5)
    assert torch.allclose(unseen, reference, atol=1e-6)


def stream_after_four_frames(model, clip):
    """A stream (window 3) of both rows of ``clip`` after its first four frames."""
    stream = model.stream(clip.shape[0], window=3)
    with torch.no_grad():
        for t in range(4):
            stream.step(clip[:, t])
    return stream


def test_a_reset_row_starts_without_memory(clip):
    torch.manual_seed(0)
    model = tiny(latent_memory=2)
    stream = stream_after_four_frames(model, clip)
    with torch.no_grad():
        stream.reset(torch.tensor([True, False]))
        resumed = torch.stack([stream.step(clip[:, t]) for t in range(4, 8)], dim=1)
        fresh = stream_contexts(model, clip[:1, 4:8], 3)
        continued = model.extract_context(clip[1:, :8], window=3)[:, 4:]
    assert torch.allclose(resumed[:1], fresh, atol=1e-5)
    assert torch.allclose(resumed[1:], continued, atol=1e-5)


def test_a_selected_stream_keeps_its_rows_memory(clip):
    torch.manual_seed(0)
    stream = stream_after_four_frames(tiny(latent_memory=2), clip)
    with torch.no_grad():
        selected = stream.select(torch.tensor([1]))
        assert torch.allclose(selected.step(clip[1:, 4]), stream.step(clip[:, 4])[1:], atol=1e-5)


def test_the_memory_is_held_in_the_streams_bytes(clip):
    torch.manual_seed(0)
    without, with_memory = tiny().stream(2, window=3), tiny(latent_memory=2).stream(2, window=3)
    for stream in (without, with_memory):
        stream.step(clip[:, 0])
    n, d = with_memory.last_latents.shape[1:]
    rows, frames, keys_and_values = 2, 2, 2
    assert with_memory.nbytes() - without.nbytes() == rows * frames * keys_and_values * n * d * 4


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_a_memory_that_is_not_a_count_of_frames_is_refused(value):
    with pytest.raises(ValueError, match="latent_memory"):
        tiny(latent_memory=value)


def test_no_memory_adds_no_weights():
    assert not any("encoder.memory" in name for name in tiny().state_dict())
    assert any("encoder.memory" in name for name in tiny(latent_memory=1).state_dict())


def test_a_config_written_before_the_memory_loads_without_one(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "latent_memory")
    assert model.config.predictor.latent_memory == 0 and model.predictor.encoder.memory is None


def test_the_stream_projects_each_frames_latents_for_the_memory_once(clip):
    torch.manual_seed(0)
    model = tiny(latent_memory=2)
    projected = []
    key_map = model.predictor.encoder.memory.attention.k_proj
    key_map.register_forward_hook(lambda module, inputs, output: projected.append(inputs[0].shape[1]))
    stream = model.stream(clip.shape[0], window=3)
    with torch.no_grad():
        for t in range(4):
            stream.step(clip[:, t])
    assert projected == [model.predictor.encoder.num_latents] * 4
