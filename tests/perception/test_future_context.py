"""``future_context_weight``: the pooled context of frame t predicts the model's own context of frames t+1 … t+K
(the self-predictive term), so it must carry how things move as well as where they are."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception.modules.future_context import FutureContextHead
from tests.perception.helpers import load_without_predictor_key, tiny

LOSSES = ("token_loss", "next_frame_loss", "context_prediction_loss", "accuracy")


def losses(model, clip, num_context_frames=4) -> dict[str, torch.Tensor]:
    with torch.no_grad():  # eval mode: every future position masked, nothing random
        out = model.predictor(clip[:, :8], num_context_frames=num_context_frames, reconstruct=False)
    return {name: out[name] for name in (*LOSSES, "future_context_loss")}


def test_the_term_is_off_by_default_and_adds_nothing(clip):
    model = tiny()
    assert model.predictor.future_context_head is None
    assert losses(model, clip)["future_context_loss"] == 0


def test_the_term_leaves_every_other_loss_as_it_was(clip):
    """The encoder is causal: encoding the frames after the context ones changes nothing before them."""
    torch.manual_seed(0)
    without = tiny(context_prediction_weight=1.0)
    with_term = tiny(context_prediction_weight=1.0, future_context_weight=1.0)
    with_term.load_state_dict(without.state_dict(), strict=False)  # the same weights; the head is extra
    before, after = losses(without, clip), losses(with_term, clip)
    assert after["future_context_loss"] > 0
    for name in LOSSES:
        assert torch.allclose(before[name], after[name], atol=1e-5), name


def test_the_context_is_trained_towards_its_future_and_the_future_is_not_moved_towards_it():
    torch.manual_seed(0)
    model = tiny(future_context_weight=1.0).predictor
    context = torch.randn(2, 4, model.num_latent_channels, requires_grad=True)
    later = torch.randn(2, 3, model.num_latent_channels, requires_grad=True)
    model._future_context_loss(context, later).backward()
    assert context.grad.abs().sum() > 0
    assert later.grad is None  # a target only


@pytest.mark.parametrize("steps", [1, 3])
def test_every_step_up_to_future_context_steps_is_predicted_from_every_frame_with_a_later_one(steps):
    torch.manual_seed(0)
    model = tiny(future_context_weight=1.0, future_context_steps=steps).predictor
    asked = []
    head = model.future_context_head.forward

    def spy(context, step):
        asked.append((context.shape[1], step))
        return head(context, step)

    model.future_context_head.forward = spy
    model._future_context_loss(torch.randn(2, 4, model.num_latent_channels), torch.randn(2, 2, 32))
    # 4 context frames and 2 later ones: k frames on exists for min(4, 6 - k) source frames
    assert asked == [(min(4, 6 - k), k) for k in range(1, steps + 1)]


def test_a_training_step_trains_the_encoder_and_the_head(clip):
    torch.manual_seed(0)
    model = tiny(future_context_weight=1.0).predictor.train()
    model(clip[:, :8], num_context_frames=4, reconstruct=False)["future_context_loss"].backward()
    assert model.encoder.latents.grad.abs().sum() > 0
    assert model.future_context_head.step_embedding.grad.abs().sum() > 0


def test_the_term_falls_when_a_short_training_fits_it(clip):
    torch.manual_seed(0)
    model = tiny(future_context_weight=1.0).predictor.train()
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)

    def term() -> torch.Tensor:
        return model(clip[:, :8], num_context_frames=4, reconstruct=False)["future_context_loss"]

    first = term().item()
    for _ in range(30):
        optimizer.zero_grad()
        term().backward()
        optimizer.step()
    assert term().item() < 0.75 * first


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"future_context_steps": 0}, "future_context_steps"),
        ({"future_context_steps": 9}, "future_context_steps"),  # the tiny preset's sequence_length is 8
        ({"future_context_weight": -1.0}, "future_context_weight"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides, name):
    with pytest.raises(ValueError, match=name):
        tiny(**overrides)


def test_the_head_refuses_a_step_it_was_not_built_for():
    with pytest.raises(ValueError, match="step"):
        FutureContextHead(8, max_steps=2)(torch.zeros(1, 8), 3)


@pytest.mark.parametrize("key", ["future_context_weight", "future_context_steps"])
def test_a_config_written_before_the_term_loads_without_it(tmp_path, key):
    loaded = load_without_predictor_key(tmp_path / "model", key)
    assert loaded.predictor.future_context_head is None
