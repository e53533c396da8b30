"""``context_whitening``: the context handed out is decorrelated by a ZCA map fitted, like BatchNorm's statistics, to
the contexts of the training steps."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import TIMESCALES, CausalPerceiverIO, get_preset
from aime_rl.perception.modules.whitening import ContextWhitening
from tests.perception.helpers import TIMESCALE_NAMES, load_without_predictor_key, stream_contexts, tiny


def correlated(num: int, dim: int = 6, seed: int = 0, spread: float = 10.0) -> torch.Tensor:
    """``[num, dim]`` vectors whose variance sits in one direction (``spread`` times the standard deviation of the
    others), in random axes."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([spread] + [1.0] * (dim - 1))
    mixing = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    return (torch.randn(num, dim, generator=g) * scales) @ mixing + 3.0


def trained_steps(model: CausalPerceiverIO, clip: torch.Tensor, steps: int = 3) -> CausalPerceiverIO:
    """A few training-mode forward passes (the statistics are gathered there; no optimiser needed)."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
    return model.eval()


def test_whitened_vectors_have_unit_uncorrelated_variance():
    whitening = ContextWhitening(6)
    data = correlated(4000)
    for batch in data.split(500):
        whitening.update(batch)
    covariance = torch.cov(whitening(data).T)
    assert torch.allclose(covariance, torch.eye(6), atol=0.05)
    assert whitening(data).mean(0).abs().max() < 0.05


def test_the_map_is_symmetric_so_channels_keep_their_axes():
    whitening = ContextWhitening(6)
    whitening.update(correlated(1000))
    assert torch.allclose(whitening.matrix(), whitening.matrix().T, atol=1e-5)


def test_before_any_statistics_the_map_is_the_identity():
    whitening = ContextWhitening(6)
    x = torch.randn(3, 6)
    assert not whitening.fitted
    assert torch.equal(whitening(x), x)


def test_the_first_batches_are_averaged_then_the_momentum_takes_over():
    whitening = ContextWhitening(2, momentum=0.5)
    whitening.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean 1
    whitening.update(torch.tensor([[4.0, 4.0], [6.0, 6.0]]))  # mean 5: weight 1/2 (the average of two)
    assert whitening.running_mean.tolist() == pytest.approx([3.0, 3.0])
    whitening.update(torch.tensor([[10.0, 10.0], [12.0, 12.0]]))  # mean 11: weight max(0.5, 1/3)
    assert whitening.running_mean.tolist() == pytest.approx([7.0, 7.0])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="momentum"):
        ContextWhitening(4, momentum=0.0)
    with pytest.raises(ValueError, match="eps"):
        ContextWhitening(4, eps=0.0)


def test_training_steps_gather_the_statistics_of_every_timescale(clip):
    model = trained_steps(tiny(context_whitening=True), clip)
    assert set(model.predictor.whitening) == set(TIMESCALES)
    assert all(w.num_batches.item() == 3 for w in model.predictor.whitening.values())


def test_a_bf16_autocast_training_step_gathers_float32_statistics(clip):
    model = tiny(context_whitening=True).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the trainer does on a GPU
        model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)["loss"].backward()
    whitening = model.predictor.whitening["fast"]
    assert whitening.num_batches.item() == 1
    assert whitening.running_covariance.dtype == torch.float32


def test_evaluation_leaves_the_statistics_alone(clip):
    model = trained_steps(tiny(context_whitening=True), clip, steps=1)
    before = model.predictor.whitening["fast"].running_covariance.clone()
    with torch.no_grad():
        model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
        model.extract_context(clip)
    assert torch.equal(model.predictor.whitening["fast"].running_covariance, before)


def test_the_handed_out_context_is_the_whitened_pooled_context(clip):
    model = trained_steps(tiny(context_whitening=True), clip)
    predictor = model.predictor
    with torch.no_grad():
        tokens = predictor.tokenize(clip)
        raw = predictor.frame_context(predictor.encode_tokens(tokens, clip.shape[1]))
        expected = predictor.whitening["fast"](raw)
        assert torch.allclose(model.extract_context(clip), expected, atol=1e-5)
        assert not torch.allclose(model.extract_context(clip), raw, atol=1e-2)


@pytest.mark.parametrize("timescale", TIMESCALE_NAMES)
def test_stream_equals_offline_with_whitening(clip, timescale):
    torch.manual_seed(0)
    model = tiny(context_whitening=True, context_pooling="projection")
    # a well-conditioned map: a few training steps of a tiny model leave its smallest directions to noise
    for whitening in model.predictor.whitening.values():
        whitening.update(correlated(2000, dim=32))
    with torch.no_grad():
        offline = model.extract_context(clip, window=4, timescale=timescale)
        online = stream_contexts(model, clip, 4, timescale=timescale)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_the_context_stays_differentiable_after_an_inference_mode_pass(clip):
    model = trained_steps(tiny(context_whitening=True), clip)
    with torch.inference_mode():
        model.extract_context(clip)  # the map is computed (and cached) in inference mode
    model.extract_context(clip).square().sum().backward()  # an inference tensor here could not be saved
    assert model.predictor.encoder.latents.grad.abs().sum() > 0


def test_the_statistics_are_saved_with_the_model(tmp_path, clip):
    model = trained_steps(tiny(context_whitening=True), clip)
    model.save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        assert torch.allclose(loaded.extract_context(clip), model.extract_context(clip), atol=1e-5)


def test_a_config_written_before_context_whitening_loads_without_it(tmp_path):
    assert load_without_predictor_key(tmp_path / "model", "context_whitening").predictor.whitening is None


def test_the_paper_preset_hands_out_the_seeds_context():
    assert get_preset("paper").predictor.context_whitening is False


def test_the_small_preset_whitens_its_context():
    assert get_preset("small").predictor.context_whitening is True


def test_calibration_replaces_the_statistics_by_those_of_the_clips(clip):
    model = trained_steps(tiny(context_whitening=True), clip).train()
    predictor = model.predictor
    counted = predictor.calibrate_whitening([clip[:, :6], clip[:, 6:]], window=3)
    assert counted == 2 * 2 * 6 and predictor.training  # every context of both clips; the mode restored
    with torch.no_grad():
        raw = [
            predictor.frame_context(predictor.encode_tokens(predictor.tokenize(part), 6, 3))
            for part in (clip[:, :6], clip[:, 6:])
        ]
    expected = torch.cat(raw, 1).flatten(0, 1).mean(0)
    assert torch.allclose(predictor.whitening["fast"].running_mean, expected, atol=1e-5)
    assert predictor.whitening["fast"].num_batches.item() == 2


def test_calibrating_a_model_without_whitening_does_nothing(clip):
    assert tiny().predictor.calibrate_whitening([clip]) == 0


def test_directions_of_almost_no_variance_are_damped_not_blown_up():
    whitening = ContextWhitening(6, eps=1e-2)
    data = correlated(4000, spread=1000.0)  # the other directions have 1e-6 of the largest variance
    whitening.update(data)
    variances = torch.linalg.eigvalsh(torch.cov(whitening(data).T))
    assert variances.max() == pytest.approx(1.0, rel=0.05)
    assert variances[:-1].max() < 1e-3  # (1e-6 / (1e-6 + 1e-2)): damped, where exact whitening would give 1
