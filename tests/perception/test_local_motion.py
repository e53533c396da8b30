"""``local_motion_frames``: each key also carries its cell's motion — a small convolution over the code embeddings of
its 3×3 neighbourhood in the last k token steps, trained by its own head to name the cell's next tokens."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import get_preset
from aime_rl.perception.modules.local_motion import (
    NEIGHBOURS,
    LocalMotionEncoder,
    neighbourhoods,
    step_history,
)
from tests.perception.helpers import (
    assert_stream_equals_offline,
    load_without_predictor_key,
    stream_contexts,
    tiny,
    two_clips_that_end_alike,
)


def moving_object_tokens(num_clips: int = 16, steps: int = 4) -> torch.Tensor:
    """Tokens ``[B, steps, 4, 4, 2]`` of a 4×4 grid: background code 0, one object (code 1 in both heads) that
    crosses a row one cell per step, left to right or right to left (the last frame alone cannot tell which)."""
    tokens = torch.zeros(num_clips, steps, 4, 4, 2, dtype=torch.long)
    for clip in range(num_clips):
        row, rightwards = clip % 4, clip % 8 < 4
        for step in range(steps):
            tokens[clip, step, row, step if rightwards else 3 - step] = 1
    return tokens


def named_next_place_accuracy(model, tokens: torch.Tensor) -> float:
    """How often the local motion head, read at the object's cell, names the object (code 1, head 0) in the
    neighbour it moves to next — the cell to its right (neighbour 5) or to its left (neighbour 3)."""
    predictor = model.predictor
    with torch.no_grad():
        logits = predictor.local_motion_logits(predictor.local_motion_features(tokens[:, :-1]))
    named = logits[..., 0, :].argmax(-1)  # [B, S, h, w, 9]
    hits = []
    for clip in range(tokens.shape[0]):
        for step in range(tokens.shape[1] - 1):
            row, column = (tokens[clip, step, ..., 0] == 1).nonzero()[0].tolist()
            next_column = (tokens[clip, step + 1, row, :, 0] == 1).nonzero()[0].item()
            neighbour = 5 if next_column > column else 3
            hits.append(named[clip, step, row, column, neighbour].item() == 1)
    return sum(hits) / len(hits)


def test_step_history_puts_the_newest_step_first_and_the_fill_before_the_clip():
    tokens = torch.arange(4).view(1, 4, 1, 1, 1)
    history = step_history(tokens, 3, fill=9)[0, :, :, 0, 0, 0]
    assert history.tolist() == [[0, 9, 9], [1, 0, 9], [2, 1, 0], [3, 2, 1]]


def test_neighbourhoods_list_each_cells_3x3_cells_row_major_with_a_fill_outside():
    tokens = torch.arange(6).view(2, 3, 1)  # a 2×3 grid, one head
    cells = neighbourhoods(tokens)[..., 0]
    assert cells[0, 0].tolist() == [-1, -1, -1, -1, 0, 1, -1, 3, 4]
    assert cells[1, 1].tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1]


def test_a_step_s_feature_does_not_see_later_steps(clip):
    model = tiny(local_motion_frames=3)
    tokens = model.predictor.tokenize(clip[:, :6])
    changed = tokens.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % model.tokenizer.num_codes
    with torch.no_grad():
        before = model.predictor.local_motion_features(tokens)
        after = model.predictor.local_motion_features(changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("frames", [0, 3])
def test_a_one_frame_window_sees_how_the_frame_changed_only_with_local_motion(clip, frames):
    model = tiny(local_motion_frames=frames, encoder="patch")  # a frame's tokens from that frame alone
    with torch.no_grad():
        context = model.extract_context(two_clips_that_end_alike(clip), window=1)[:, -1]
    assert torch.allclose(context[0], context[1], atol=1e-5) != bool(frames)


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_stream_equals_offline_with_local_motion(clip, window, temporal_downsample):
    model = tiny(
        local_motion_frames=3,
        recency_bias=1.0,
        motion_attention_bias=1.0,
        temporal_downsample=temporal_downsample,
    )
    assert_stream_equals_offline(model, clip, window)


@torch.no_grad()
def test_a_row_reset_at_an_odd_frame_keeps_its_own_token_steps(clip):
    # with temporal_downsample a token step is two frames: after a reset at frame 5 the rows emit on different frames
    model = tiny(local_motion_frames=3, temporal_downsample=True)
    stream = model.stream(2, window=4)
    for t in range(5):
        stream.step(clip[:, t])
    stream.reset(torch.tensor([True, False]))
    online = torch.stack([stream.step(clip[:, t]) for t in range(5, 11)], dim=1)
    assert torch.allclose(online[:1], model.extract_context(clip[:1, 5:11], window=4), atol=1e-4, rtol=0)
    continued = model.extract_context(clip[1:], window=4)[:, 5:11]
    assert torch.allclose(online[1:], continued, atol=1e-4, rtol=0)


def stream_after(model, clip: torch.Tensor, frames: int):
    """A window-4 stream of ``model`` over both rows of ``clip``, stepped through its first ``frames`` frames."""
    stream = model.stream(2, window=4)
    for t in range(frames):
        stream.step(clip[:, t])
    return stream


@torch.no_grad()
@pytest.mark.parametrize("inputs", ["codes", "pixels"])
def test_a_reset_row_starts_its_history_again(clip, inputs):
    model = tiny(local_motion_frames=3, local_motion_inputs=inputs)
    stream = stream_after(model, clip, 5)
    stream.reset(torch.tensor([True, False]))
    restarted = torch.stack([stream.step(clip[:, t]) for t in range(5, 9)], dim=1)
    fresh = model.extract_context(clip[:1, 5:9], window=4)
    assert torch.allclose(restarted[:1], fresh, atol=1e-4, rtol=0)


@torch.no_grad()
def test_a_selected_stream_keeps_its_rows_history(clip):
    model = tiny(local_motion_frames=3)
    selected = stream_after(model, clip, 4).select(torch.tensor([1]))
    online = torch.stack([selected.step(clip[1:, t]) for t in range(4, 8)], dim=1)
    offline = stream_contexts(model, clip[:, :8], 4)[1:, 4:]
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_training_from_cached_tokens_gives_the_loss_of_frames(clip):
    model = tiny(local_motion_frames=3)
    with torch.no_grad():
        from_frames = model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
        tokens = model.predictor.tokenize(clip[:, :8])
        from_tokens = model.predictor(None, num_context_frames=5, tokens=tokens)
    assert from_frames["local_motion_loss"] > 0
    assert torch.allclose(from_frames["loss"], from_tokens["loss"], atol=1e-5)


def test_the_local_motion_term_trains_the_convolution_and_the_key_map(clip):
    model = tiny(local_motion_frames=2).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    predictor = model.predictor
    assert predictor.local_motion.convs[0].weight.grad.abs().sum() > 0
    assert predictor.local_motion_keys.weight.grad.abs().sum() > 0
    assert predictor.local_motion_spread.weight.grad.abs().sum() > 0  # the term's own head


def test_the_local_motion_term_is_part_of_the_loss(clip):
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = tiny(local_motion_frames=2, local_motion_weight=weight).train()
        out = model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
        losses[weight] = (out["loss"] - out["local_motion_loss"] * weight).item(), out["loss"].item()
    assert losses[0.0][1] == pytest.approx(losses[1.0][0], abs=1e-5)  # the same model without the term
    assert losses[1.0][1] > losses[1.0][0]


@torch.no_grad()
def test_the_local_motion_term_scores_every_neighbour_inside_the_grid_and_none_outside():
    model = tiny(local_motion_frames=2, change_weight=1.0)
    predictor = model.predictor
    tokens = moving_object_tokens(num_clips=3, steps=4)
    features = predictor.local_motion_features(tokens[:, :-1])
    logits = predictor.local_motion_logits(features)  # [B, S, h, w, 9, G, K]
    following, now = neighbourhoods(tokens[:, 1:]), neighbourhoods(tokens[:, :-1])
    inside = (following >= 0).all(-1)
    expected = predictor._cross_entropy(logits[inside], following[inside], (following != now).any(-1)[inside])
    assert predictor._local_motion_loss(features, tokens) == pytest.approx(expected.item(), abs=1e-6)


@torch.no_grad()
def test_an_episode_s_first_steps_read_their_missing_history_as_unknown(clip):
    model = tiny(local_motion_frames=3)
    predictor = model.predictor
    tokens = predictor.tokenize(clip[:1, :2])  # [1, 2, h, w, G]
    mask = torch.full_like(tokens[:, 0], predictor.input_adapter.mask_id)
    history = torch.stack([tokens[:, 1], tokens[:, 0], mask], dim=1)  # step 1: itself, step 0, unknown
    expected = predictor.local_motion(predictor.input_adapter.embed_ids(history))
    assert torch.allclose(predictor.local_motion_features(tokens)[:, 1], expected, atol=1e-6)
    stream = model.stream(1, window=4)
    stream.step(clip[:1, 0])
    assert torch.allclose(stream._local_motion(tokens[:, 1]), expected, atol=1e-5)


def test_the_cell_a_moving_object_is_in_learns_where_it_goes_next():
    model = tiny(
        local_motion_frames=2, next_frame_weight=0.0, context_prediction_weight=0.0, change_weight=1.0
    ).train()
    tokens = moving_object_tokens()
    before = named_next_place_accuracy(model, tokens)
    optimizer = torch.optim.Adam(model.predictor.trainable_parameters(), lr=3e-3)
    for _ in range(200):
        loss = model.predictor(None, num_context_frames=3, tokens=tokens)["local_motion_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before < 0.5
    assert named_next_place_accuracy(model, tokens) == 1.0


def test_off_by_default_and_in_the_paper_preset():
    assert tiny().predictor.local_motion is None
    assert get_preset("paper").predictor.local_motion_frames == 0


def test_a_config_written_before_local_motion_loads_without_it(tmp_path):
    assert (
        load_without_predictor_key(tmp_path / "model", "local_motion_frames").predictor.local_motion is None
    )


@pytest.mark.parametrize("frames", [1, -1, 2.0, True])
def test_a_history_of_fewer_than_two_steps_is_refused(frames):
    with pytest.raises(ValueError, match="local_motion_frames"):
        tiny(local_motion_frames=frames)


def test_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="local_motion_weight"):
        tiny(local_motion_frames=2, local_motion_weight=-1.0)


def test_the_encoder_maps_k_steps_of_embeddings_to_features_per_cell():
    encoder = LocalMotionEncoder(input_channels=16, frames=3)
    assert encoder(torch.randn(2, 5, 3, 4, 6, 16)).shape == (2, 5, 4, 6, encoder.out_channels)


def expected_local_motion_loss(predictor, features, tokens, ahead_steps):
    """The local motion term by hand: for each step ahead a, the CE of the neighbourhoods' tokens a steps later,
    over the steps whose s + a is in the clip and the neighbours inside the grid."""
    logits = predictor._local_motion_ahead_logits(features)  # [B, S, h, w, H, 9, G, K]
    total = 0.0
    for ahead in ahead_steps:
        steps = min(features.shape[1], tokens.shape[1] - ahead)
        later, now = neighbourhoods(tokens[:, ahead : ahead + steps]), neighbourhoods(tokens[:, :steps])
        inside = (later >= 0).all(-1)
        named = logits[:, :steps, :, :, ahead - 1]
        changed = (later != now).any(-1)
        total += predictor._cross_entropy(named[inside], later[inside], changed[inside]).item()
    return total


@torch.no_grad()
def test_a_horizon_of_two_adds_the_term_of_the_neighbourhoods_two_steps_later():
    predictor = tiny(local_motion_frames=2, local_motion_horizon=2, change_weight=1.0).predictor
    tokens = moving_object_tokens(num_clips=3, steps=4)
    features = predictor.local_motion_features(tokens[:, :2])
    loss = predictor._local_motion_loss(features, tokens)
    assert loss == pytest.approx(expected_local_motion_loss(predictor, features, tokens, (1, 2)), abs=1e-5)


@torch.no_grad()
def test_steps_whose_later_tokens_are_past_the_clip_are_left_out():
    predictor = tiny(local_motion_frames=2, local_motion_horizon=2).predictor
    tokens = moving_object_tokens(num_clips=3, steps=4)
    features = predictor.local_motion_features(tokens[:, :3])  # step 2's tokens two steps later are not there
    loss = predictor._local_motion_loss(features, tokens)
    assert loss == pytest.approx(expected_local_motion_loss(predictor, features, tokens, (1, 2)), abs=1e-5)


@torch.no_grad()
def test_the_targets_of_each_step_ahead_cover_the_steps_the_clip_holds():
    predictor = tiny(local_motion_frames=2, local_motion_horizon=2).predictor
    tokens = moving_object_tokens(num_clips=3, steps=4)
    # steps 0…2: the clip holds the step after each, and the one two ahead of steps 0 and 1 only
    features = predictor.local_motion_features(tokens[:, :3])
    targets = list(predictor.local_motion_targets(features, tokens))
    # a 4×4 grid: per axis, an edge cell has 2 neighbours in line and an inner one 3
    in_grid = (2 + 3 + 3 + 2) ** 2
    assert [following.shape for _, following, _ in targets] == [(3, 3, in_grid, 2), (3, 2, in_grid, 2)]
    logits, following, changed = targets[1]
    assert logits.shape == (3, 2, in_grid, 2, predictor.input_adapter.num_codes)
    assert changed.dtype == torch.bool and bool(changed.any()) and not bool(changed.all())


def test_the_training_step_trains_the_map_of_each_step_ahead(clip):
    model = tiny(local_motion_frames=3, local_motion_horizon=2).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    grad = model.predictor.local_motion_spread.weight.grad.unflatten(0, (2, -1))  # [H, 9 · C, C]
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0


def test_a_horizon_of_one_names_the_next_step_only_as_before(tmp_path):
    predictor = tiny(local_motion_frames=3).predictor
    features = predictor.local_motion.out_channels
    assert predictor.local_motion_spread.out_features == NEIGHBOURS * features
    loaded = load_without_predictor_key(tmp_path / "model", "local_motion_horizon")
    assert loaded.config.predictor.local_motion_horizon == 1


@pytest.mark.parametrize("horizon", [0, 2.0, True])
def test_a_horizon_that_is_not_a_positive_int_is_refused(horizon):
    with pytest.raises(ValueError, match="local_motion_horizon"):
        tiny(local_motion_frames=3, local_motion_horizon=horizon)
