"""``decoder_channels``: a narrower decoder, the training head that predicts tokens from the latents."""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import load_without_predictor_key, tiny


def test_a_narrower_decoder_predicts_every_future_token(clip):
    torch.manual_seed(0)
    wide, narrow = tiny(), tiny(decoder_channels=16)
    with torch.no_grad():
        assert (
            narrow(clip, num_context_frames=4)["logits"].shape
            == wide(clip, num_context_frames=4)["logits"].shape
        )


def test_the_context_does_not_pass_through_the_decoder(clip):
    torch.manual_seed(0)
    wide = tiny()
    narrow = tiny(decoder_channels=16)
    shared = {k: v for k, v in wide.state_dict().items() if "decoder" not in k and "output_adapter" not in k}
    narrow.load_state_dict(shared, strict=False)
    with torch.no_grad():
        assert torch.equal(narrow.extract_context(clip), wide.extract_context(clip))


def test_the_narrower_decoder_is_cheaper():
    wide, narrow = tiny(), tiny(decoder_channels=16)

    def decoder_parameters(model):
        predictor = model.predictor
        parts = (predictor.decoder, predictor.decoder_in, predictor.output_adapter)
        return sum(p.numel() for part in parts if part is not None for p in part.parameters())

    assert decoder_parameters(narrow) < decoder_parameters(wide) / 2


def test_the_token_loss_trains_the_encoder_through_a_narrower_decoder(clip):
    torch.manual_seed(0)
    model = tiny(decoder_channels=16).train()
    model.predictor(clip, num_context_frames=4)["loss"].backward()
    for part in (model.predictor.decoder_in, model.predictor.output_adapter, model.predictor.encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_the_seed_width_adds_no_map():
    model = tiny()
    assert model.predictor.decoder_in is None


@pytest.mark.parametrize("channels", [0, -8, 2.5, True, 17])
def test_a_width_the_heads_cannot_split_is_refused(channels):
    with pytest.raises(ValueError, match="decoder_channels"):
        tiny(decoder_channels=channels)


def test_a_narrower_decoder_survives_save_and_load(tmp_path, clip):
    torch.manual_seed(0)
    model = tiny(decoder_channels=16)
    model.save_pretrained(tmp_path / "model")
    loaded = type(model).from_pretrained(tmp_path / "model").eval()
    assert loaded.config.predictor.decoder_channels == 16
    with torch.no_grad():
        torch.manual_seed(1)
        expected = model(clip, num_context_frames=4)["logits"]
        torch.manual_seed(1)
        assert torch.equal(loaded(clip, num_context_frames=4)["logits"], expected)


def test_a_config_written_before_the_width_loads_at_the_latents_width(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "decoder_channels")
    assert model.config.predictor.decoder_channels is None and model.predictor.decoder_in is None
