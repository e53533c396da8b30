"""``pixel_changes``: each key of the encoder's cross-attention also embeds how its cell's pixels changed since the
step before, so a single key carries the motion inside its cell at pixel precision."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import get_preset
from aime_rl.perception.modules.temporal import pixel_changes
from tests.perception.helpers import (
    assert_stream_equals_offline,
    load_without_predictor_key,
    tiny,
    two_clips_that_end_alike,
)


def dot_clip(columns: list[int], row: int = 3, size: int = 16) -> torch.Tensor:
    """``[1, T, 1, size, size]``: one bright pixel at ``(row, columns[t])`` on black."""
    video = torch.zeros(1, len(columns), 1, size, size)
    for t, column in enumerate(columns):
        video[0, t, 0, row, column] = 1.0
    return video


def test_a_cells_change_has_the_objects_displacement_as_its_first_moment():
    changes = pixel_changes(
        dot_clip([1, 4]), grid=(2, 2)
    )  # cells of 8×8 pixels; the dot stays in cell (0, 0)
    patch = changes[0, 1, 0, 0].view(8, 8)
    columns = torch.arange(8.0)
    assert (patch * columns).sum() == 3.0  # moved 3 pixels to the right
    assert changes[0, 1, 1:].abs().sum() == 0 and changes[0, 1, 0, 1].abs().sum() == 0


def test_the_first_frame_and_static_frames_have_no_change():
    changes = pixel_changes(dot_clip([2, 2, 2]), grid=(2, 2))
    assert changes.abs().sum() == 0


def test_the_first_frame_is_compared_with_the_previous_one_when_given():
    video = dot_clip([5])
    previous = dot_clip([2])[:, 0]
    patch = pixel_changes(video, grid=(2, 2), previous=previous)[0, 0, 0, 0].view(8, 8)
    assert (patch * torch.arange(8.0)).sum() == 3.0


@pytest.mark.parametrize("changes", [False, True])
def test_a_one_frame_window_sees_how_the_pixels_changed_only_with_pixel_changes(clip, changes):
    torch.manual_seed(0)
    model = tiny(pixel_changes=changes, encoder="patch")  # a frame's tokens from that frame alone
    with torch.no_grad():
        context = model.extract_context(two_clips_that_end_alike(clip), window=1)[:, -1]
    assert torch.allclose(context[0], context[1], atol=1e-5) != changes


@pytest.mark.parametrize("temporal_downsample", [False, True])
@pytest.mark.parametrize("window", [None, 4])
def test_stream_equals_offline_with_pixel_changes(clip, window, temporal_downsample):
    torch.manual_seed(0)
    model = tiny(pixel_changes=True, recency_bias=1.0, temporal_downsample=temporal_downsample)
    assert_stream_equals_offline(model, clip, window)


def test_the_change_map_is_trained(clip):
    model = tiny(pixel_changes=True).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    assert model.predictor.change_proj.weight.grad.abs().sum() > 0


def test_a_model_with_pixel_changes_refuses_cached_tokens(clip):
    model = tiny(pixel_changes=True)
    tokens = model.predictor.tokenize(clip[:, :8])
    assert model.predictor.reads_frames
    with pytest.raises(ValueError, match="pixel_changes"):
        model.predictor(None, num_context_frames=5, tokens=tokens)


def test_the_world_models_context_from_tokens_and_changes_equals_the_perception_models(clip):
    from aime_rl.world_model import VRNN

    torch.manual_seed(0)
    perceiver = tiny(pixel_changes=True, motion_attention_bias=1.0)
    world_model = VRNN(perceiver, 3, context_window=4).eval()
    _, context = world_model.perceive(clip)
    with torch.no_grad():
        expected = perceiver.extract_context(clip, window=4)
    assert torch.allclose(context, expected, atol=1e-5)


def test_a_config_written_before_pixel_changes_loads_without_them(tmp_path):
    assert load_without_predictor_key(tmp_path / "model", "pixel_changes").predictor.change_proj is None


def test_the_paper_preset_keeps_the_seeds_keys():
    assert get_preset("paper").predictor.pixel_changes is False
