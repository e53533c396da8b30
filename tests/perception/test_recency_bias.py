"""``recency_bias``: a learned per-head penalty on a key's age in the encoder's cross-attention, so that some heads
read the present frame and the others the whole window."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO, get_preset
from aime_rl.perception.predictor import initial_recency_slope
from tests.perception.helpers import load_without_predictor_key, stream_contexts, tiny


def weight_on_each_step(model: CausalPerceiverIO, clip: torch.Tensor) -> torch.Tensor:
    """The cross-attention weight the last frame's latents put on each token step ``[T']`` (batch mean)."""
    predictor = model.predictor
    with torch.no_grad():
        tokens = predictor.tokenize(clip)
        cells = predictor.attention_to_cells(tokens, clip.shape[1], motion=predictor.motion_marks(clip))
    return cells[:, -1].sum(dim=(-1, -2)).mean(0)


def test_the_penalty_moves_attention_onto_the_newest_frame(clip):
    torch.manual_seed(0)
    flat = tiny()
    torch.manual_seed(0)
    recent = tiny(recency_bias=2.0)
    recent.load_state_dict(flat.state_dict(), strict=False)  # the same weights; only the penalty differs
    before, after = weight_on_each_step(flat, clip), weight_on_each_step(recent, clip)
    assert after[-1] > 2 * before[-1]
    assert after[:-1].sum() < before[:-1].sum()


def test_it_starts_in_every_other_head():
    assert initial_recency_slope(4, 1.5).tolist() == [1.5, 0.0, 1.5, 0.0]
    assert tiny(recency_bias=1.5).predictor.recency_slope.tolist() == [1.5, 0.0]  # the tiny preset's 2 heads


@pytest.mark.parametrize("window", [None, 4])
def test_stream_equals_offline_with_the_recency_and_motion_biases(clip, window):
    torch.manual_seed(0)
    model = tiny(recency_bias=1.0, motion_attention_bias=1.0, context_pooling="projection")
    with torch.no_grad():
        model.predictor.recency_slope.copy_(torch.tensor([0.7, 1.9]))  # learned values, unlike the start
        offline = model.extract_context(clip, window=window)
        online = stream_contexts(model, clip, window)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_the_slopes_are_learned_and_saved(tmp_path, clip):
    model = tiny(recency_bias=1.0).train()
    model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)[
        "loss"
    ].backward()  # the training loss reaches them
    assert model.predictor.recency_slope.grad.abs().sum() > 0
    with torch.no_grad():
        model.predictor.recency_slope.copy_(torch.tensor([0.3, 2.2]))
    model.eval().save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model")
    assert loaded.predictor.recency_slope.tolist() == pytest.approx([0.3, 2.2])


def test_a_config_written_before_recency_bias_loads_without_it(tmp_path):
    assert load_without_predictor_key(tmp_path / "model", "recency_bias").predictor.recency_slope is None


def test_a_negative_recency_bias_is_refused_by_name():
    with pytest.raises(ValueError, match="recency_bias must be >= 0"):
        tiny(recency_bias=-1.0)


def test_the_paper_preset_keeps_the_seeds_flat_window():
    assert get_preset("paper").predictor.recency_bias == 0.0


def test_the_small_preset_reads_the_present_in_half_its_heads():
    assert get_preset("small").predictor.recency_bias == 1.0
