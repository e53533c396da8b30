"""``spatial_attention_bias``: each latent starts looking at its own region of the token grid, so the latents start
as a coarse map of the frame instead of N copies of its average."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import get_preset
from aime_rl.perception.modules.position import cell_centres, latent_homes
from aime_rl.perception.predictor import initial_spatial_slope
from tests.perception.helpers import assert_stream_equals_offline, load_without_predictor_key, tiny


def test_latent_homes_tile_the_grid():
    homes = latent_homes(4)
    assert torch.allclose(homes, torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]]))
    assert latent_homes(5).shape == (5, 2)  # the first 5 of a 3 × 3 grid


def test_cell_centres_are_row_major_in_the_unit_square():
    centres = cell_centres(2, 4)
    assert torch.allclose(centres[1], torch.tensor([-0.5, -0.25]))
    assert torch.allclose(centres[-1], torch.tensor([0.5, 0.75]))


def test_the_second_half_of_the_heads_start_biased():
    assert initial_spatial_slope(4, 8.0).tolist() == [0.0, 0.0, 8.0, 8.0]


def test_each_latent_looks_most_at_its_own_region(clip):
    torch.manual_seed(0)
    model = tiny(num_latents=4, spatial_attention_bias=20.0)  # 4 × 4 cells, 4 latents: one quadrant each
    predictor = model.predictor
    with torch.no_grad():
        tokens = predictor.tokenize(clip[:, :1])
        inputs = predictor._encoder_inputs(tokens, 1, None)
        weights = predictor.encoder.cross_attention_weights(**inputs)  # [B, T, N, heads, 1 + L]
    biased = weights[:, 0, :, -1, 1:].reshape(2, 4, 4, 4).mean(0)  # last head, [N, rows, cols]
    quadrants = [
        (slice(0, 2), slice(0, 2)),
        (slice(0, 2), slice(2, 4)),
        (slice(2, 4), slice(0, 2)),
        (slice(2, 4), slice(2, 4)),
    ]
    for latent, (rows, cols) in enumerate(quadrants):
        assert biased[latent, rows, cols].sum() > 0.9 * biased[latent].sum()


def test_without_the_option_every_latent_sees_the_same_spread(clip):
    model = tiny(num_latents=4)
    assert model.predictor.spatial_scores(4, 4) is None


@pytest.mark.parametrize("window", [None, 4])
def test_stream_equals_offline_with_spatial_attention(clip, window):
    torch.manual_seed(0)
    model = tiny(spatial_attention_bias=4.0, recency_bias=1.0, motion_attention_bias=1.0)
    assert_stream_equals_offline(model, clip, window)


def test_stream_equals_offline_with_spatial_attention_alone(clip):
    torch.manual_seed(0)
    model = tiny(spatial_attention_bias=4.0, temporal_downsample=True)
    assert_stream_equals_offline(model, clip, 4)


def test_the_homes_and_slopes_are_trained(clip):
    model = tiny(spatial_attention_bias=4.0).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    assert model.predictor.latent_homes.grad.abs().sum() > 0
    assert model.predictor.spatial_slope.grad.abs().sum() > 0


def test_a_negative_slope_is_refused():
    with pytest.raises(ValueError, match="spatial_attention_bias"):
        tiny(spatial_attention_bias=-1.0)


def test_a_config_written_before_spatial_attention_loads_without_it(tmp_path):
    assert (
        load_without_predictor_key(tmp_path / "model", "spatial_attention_bias").predictor.spatial_slope
        is None
    )


def test_the_paper_preset_keeps_the_seeds_keys():
    assert get_preset("paper").predictor.spatial_attention_bias == 0.0


def test_the_homes_are_not_pulled_to_the_centre_by_weight_decay():
    from aime_rl.training.optim import make_optimizer

    predictor = tiny(spatial_attention_bias=4.0).predictor
    optimizer = make_optimizer(predictor, lr=1e-3, weight_decay=0.1)
    group = next(g for g in optimizer.param_groups if any(p is predictor.latent_homes for p in g["params"]))
    assert group["weight_decay"] == 0.0


def test_a_one_head_model_biases_its_one_head_and_odd_counts_keep_the_motion_heads_free():
    assert initial_spatial_slope(1, 8.0).tolist() == [8.0]
    assert initial_spatial_slope(3, 8.0).tolist() == [0.0, 0.0, 8.0]
