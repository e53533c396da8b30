"""``latent_reconstruction_weight``: the pooled context also reconstructs the frame's latents through a linear map.

A training head that holds the pooling to what the latents know: the latents are targets only (no gradient reaches
them), the map starts at zero (the term at 1, "no better than the batch mean"), and the context is computed the same
way with or without it.
"""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import load_without_predictor_key, tiny


def reconstruction_model(weight: float = 1.0):
    return tiny(context_pooling="projection", latent_reconstruction_weight=weight).train()


def test_the_term_starts_at_one_and_is_added_to_the_loss_with_its_weight(clip):
    torch.manual_seed(0)
    out = reconstruction_model(0.5).predictor(clip[:, :6], 4)
    torch.testing.assert_close(out.latent_reconstruction_loss, torch.tensor(1.0))
    others = out.token_loss + out.next_frame_loss + out.context_prediction_loss
    torch.testing.assert_close(out.loss, others + 0.5 * out.latent_reconstruction_loss)


def test_the_term_trains_the_pooling_and_not_what_it_pools(clip):
    torch.manual_seed(0)
    predictor = reconstruction_model().predictor
    torch.nn.init.normal_(predictor.latent_readout.weight, std=0.02)  # past the zero start
    predictor(clip[:, :6], 4).latent_reconstruction_loss.backward()
    assert predictor.context_projection.weight.grad.abs().sum() > 0
    assert predictor.latent_readout.weight.grad.abs().sum() > 0
    encoder_grads = [p.grad for p in predictor.encoder.parameters() if p.grad is not None]
    assert all(float(g.abs().sum()) == 0 for g in encoder_grads)


def test_a_short_training_on_the_term_lowers_it(clip):
    torch.manual_seed(0)
    predictor = reconstruction_model().predictor
    parameters = [*predictor.latent_readout.parameters(), *predictor.context_projection.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = predictor(clip[:, :6], 4).latent_reconstruction_loss
        loss.backward()
        optimizer.step()
    assert float(predictor(clip[:, :6], 4).latent_reconstruction_loss) < 0.5


def test_without_the_weight_nothing_is_built_or_computed(clip):
    predictor = tiny(context_pooling="projection").train().predictor
    assert predictor.latent_readout is None
    assert float(predictor(clip[:, :6], 4).latent_reconstruction_loss) == 0


def test_the_term_leaves_the_context_unchanged(clip):
    torch.manual_seed(0)
    plain = tiny(context_pooling="projection")
    with_term = tiny(context_pooling="projection", latent_reconstruction_weight=1.0)
    missing, unexpected = with_term.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("latent_readout" in name for name in missing)
    with torch.no_grad():
        assert torch.equal(plain.extract_context(clip), with_term.extract_context(clip))


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_a_weight_below_zero_is_refused(weight):
    with pytest.raises(ValueError, match="latent_reconstruction_weight"):
        tiny(latent_reconstruction_weight=weight)


def test_a_config_written_before_the_term_loads_without_it(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "latent_reconstruction_weight")
    assert model.config.predictor.latent_reconstruction_weight == 0
    assert model.predictor.latent_readout is None
