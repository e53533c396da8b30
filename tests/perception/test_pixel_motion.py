"""``local_motion_inputs="pixels"``: the local motion encoder reads each cell's pixels instead of its code embeddings;
``local_motion_history``: training clips start k − 1 steps early, so its features see their whole history."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception.modules.local_motion import history_known, pixel_motion_cells, pixel_motion_inputs
from aime_rl.perception.modules.temporal import cell_patches
from tests.perception.helpers import assert_stream_equals_offline, load_without_predictor_key, tiny

PIXELS = dict(local_motion_frames=3, local_motion_inputs="pixels")


def test_cell_patches_list_each_cells_channels_then_rows_then_columns():
    frames = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)  # C = 2, a 4×4 frame
    patches = cell_patches(frames, (2, 2))
    assert patches.shape == (2, 2, 8)
    assert patches[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]


def test_pixel_motion_cells_are_the_patches_less_the_frames_mean_colour():
    frames = torch.zeros(3, 4, 4)
    frames[0] = 0.2  # a plain red screen ...
    frames[0, 0, 0] = 1.0  # ... with one bright pixel
    cells = pixel_motion_cells(frames, (2, 2))
    assert torch.allclose(cells[1, 1, :4], torch.full((4,), -0.05))  # red less its mean 0.25
    assert cells[0, 0, 0] == pytest.approx(0.75)
    assert torch.allclose(cells[..., 4:], torch.zeros(2, 2, 8))  # the other channels are plain: zero


def test_an_unknown_step_reads_as_zero_with_its_flag_off():
    cells = torch.full((1, 2, 1, 1, 3), 0.5)  # a known step, then a step before the episode
    inputs = pixel_motion_inputs(cells, torch.tensor([[True, False]]))
    assert inputs[0, 0, 0, 0].tolist() == [0.5, 0.5, 0.5, 1]
    assert inputs[0, 1, 0, 0].tolist() == [0, 0, 0, 0]


def test_history_known_marks_the_steps_before_the_clip():
    assert history_known(3, 2).tolist() == [[True, False], [True, True], [True, True]]


def test_pixel_features_see_what_moved_inside_a_cell_where_code_features_see_the_codes_only(clip):
    video = clip[:1, :4]
    shifted = video.clone()
    shifted[:, -1] = torch.roll(video[:, -1], shifts=1, dims=-1)  # the last frame's pixels, not its tokens
    for inputs, differ in (("codes", False), ("pixels", True)):
        predictor = tiny(local_motion_frames=3, local_motion_inputs=inputs).predictor
        tokens = predictor.tokenize(video)
        with torch.no_grad():
            original = predictor.local_motion_features(tokens, video)
            moved = predictor.local_motion_features(tokens, shifted)
        assert torch.allclose(original, moved) != differ


def test_a_step_s_pixel_feature_does_not_see_later_frames(clip):
    predictor = tiny(**PIXELS).predictor
    video = clip[:1, :6]
    changed = video.clone()
    changed[:, 4:] = 1 - changed[:, 4:]
    tokens = predictor.tokenize(video)
    with torch.no_grad():
        before = predictor.local_motion_features(tokens, video)
        after = predictor.local_motion_features(tokens, changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_tokens_without_frames_read_the_tokenizers_decoding(clip):
    predictor = tiny(**PIXELS).predictor
    tokens = predictor.tokenize(clip[:1, :4])
    with torch.no_grad():
        decoded = predictor.tokenizer.decode(tokens.squeeze(-1) if tokens.shape[-1] == 1 else tokens).clamp(
            0, 1
        )
        assert torch.allclose(
            predictor.local_motion_features(tokens), predictor.local_motion_features(tokens, decoded)
        )


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_stream_equals_offline_with_pixel_motion(clip, window, temporal_downsample):
    model = tiny(
        **PIXELS, local_motion_context=not temporal_downsample, temporal_downsample=temporal_downsample
    )
    assert_stream_equals_offline(model, clip, window)


def test_a_pixel_motion_model_reads_frames_and_refuses_cached_tokens(clip):
    predictor = tiny(**PIXELS).predictor
    assert predictor.reads_frames
    with pytest.raises(ValueError, match="train on videos"):
        predictor(None, num_context_frames=3, tokens=predictor.tokenize(clip[:, :6]))


def test_unknown_local_motion_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="local_motion_inputs must be one of"):
        tiny(local_motion_frames=3, local_motion_inputs="rgb")


def test_a_config_written_before_pixel_motion_loads_with_codes_and_no_history(tmp_path):
    model = load_without_predictor_key(tmp_path, "local_motion_inputs")
    assert model.config.predictor.local_motion_inputs == "codes"
    assert not model.config.predictor.local_motion_history


def test_a_pixel_motion_model_saves_and_loads(tmp_path, clip):
    model = tiny(**PIXELS, local_motion_history=True)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.config.predictor.local_motion_inputs == "pixels"
    with torch.no_grad():
        assert torch.allclose(model.extract_context(clip[:, :6]), loaded.extract_context(clip[:, :6]))


# -- local_motion_history --------------------------------------------------------------------------------------


def test_the_motion_history_is_k_minus_one_token_steps_and_only_when_asked():
    assert tiny(local_motion_frames=4, local_motion_history=True).predictor.motion_history_frames == 3
    assert (
        tiny(
            local_motion_frames=4, local_motion_history=True, temporal_downsample=True
        ).predictor.motion_history_frames
        == 6
    )
    assert tiny(local_motion_frames=4).predictor.motion_history_frames == 0
    assert tiny(local_motion_history=True).predictor.motion_history_frames == 0


@torch.no_grad()
def test_history_frames_are_invisible_to_a_model_without_local_motion(clip):
    predictor = tiny(encoder="patch").predictor  # a frame's tokens from that frame alone
    with_history = predictor(clip[:, :8], num_context_frames=3, history_frames=2, reconstruct=True)
    without = predictor(clip[:, 2:8], num_context_frames=3, reconstruct=True)
    assert torch.allclose(with_history.loss, without.loss)
    assert torch.allclose(with_history.reconstructed, without.reconstructed)


@torch.no_grad()
def test_the_local_motion_encoder_reads_the_history_frames(clip):
    predictor = tiny(**PIXELS).predictor
    video = clip[:, :8]
    changed = video.clone()
    changed[:, 0] = 1 - changed[:, 0]
    first = predictor(video, num_context_frames=3, history_frames=2, reconstruct=False)
    second = predictor(changed, num_context_frames=3, history_frames=2, reconstruct=False)
    assert not torch.allclose(first.loss, second.loss)


@pytest.mark.parametrize("history_frames", [-1, 1.0, True, 8])
def test_history_frames_that_are_not_a_count_inside_the_clip_are_refused(clip, history_frames):
    predictor = tiny(**PIXELS).predictor
    with pytest.raises(ValueError, match="history_frames"):
        predictor(clip[:, :8], num_context_frames=3, history_frames=history_frames)
