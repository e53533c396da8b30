"""``copy_logit``: the next-frame decoder's logits give each cell's last observed token a learned bonus.

Without it the copy prior enters only as an embedding added to each output query, so "this cell stays as it was" is
an identity map the decoder has to learn; with it the decoder starts at copy-last. Where the decoder is not given
the last tokens (the context-prediction term) there is no bonus.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.perception.helpers import load_without_predictor_key, tiny

CONTEXT_FRAMES = 4


def with_bonus(value: float):
    """A tiny model with ``copy_logit=value`` and otherwise the weights of ``tiny()`` at seed 0, and that model."""
    torch.manual_seed(0)
    plain = tiny()
    model = tiny(copy_logit=value)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["predictor.copy_logit"] and not unexpected
    return model, plain


def test_the_last_tokens_logits_get_the_bonus_and_no_other(clip):
    model, plain = with_bonus(2.5)
    with torch.no_grad():
        bonus = model.predictor(clip[:, :6], CONTEXT_FRAMES).logits
        before = plain.predictor(clip[:, :6], CONTEXT_FRAMES).logits
        last = model.predictor.tokenize(clip[:, :CONTEXT_FRAMES])[:, -1]  # [B, h, w, G]
    expected = 2.5 * F.one_hot(last, bonus.shape[-1]).to(bonus.dtype).unsqueeze(1).expand_as(bonus)
    assert torch.allclose(bonus - before, expected, atol=1e-5)


def test_a_large_bonus_makes_an_untrained_model_predict_copy_last(clip):
    model, _ = with_bonus(100.0)
    with torch.no_grad():
        predicted = model.predictor(clip[:, :6], CONTEXT_FRAMES).logits.argmax(-1)  # [B, F, h, w, G]
        last = model.predictor.tokenize(clip[:, :CONTEXT_FRAMES])[:, -1]
    assert torch.equal(predicted, last.unsqueeze(1).expand_as(predicted))


def test_the_context_prediction_term_gets_no_bonus(clip):
    model, plain = with_bonus(2.5)
    torch.manual_seed(1)
    memory = torch.randn(2, 3, model.config.predictor.num_latent_channels)
    ids = torch.full((2, 1, 4, 4, 2), model.predictor.input_adapter.mask_id)
    with torch.no_grad():
        assert torch.equal(
            model.predictor.predict_logits(memory, ids, None),
            plain.predictor.predict_logits(memory, ids, None),
        )


def test_the_bonus_is_learned(clip):
    model, _ = with_bonus(1.0)
    model.train().predictor(clip[:, :6], CONTEXT_FRAMES).loss.backward()
    assert model.predictor.copy_logit.grad.abs().sum() > 0


def test_the_bonus_leaves_the_context_unchanged(clip):
    model, plain = with_bonus(2.5)
    with torch.no_grad():
        assert torch.equal(model.extract_context(clip), plain.extract_context(clip))


def test_without_it_there_is_no_parameter():
    assert tiny().predictor.copy_logit is None


def test_the_learned_bonus_survives_a_checkpoint(tmp_path):
    model, _ = with_bonus(2.5)
    with torch.no_grad():
        model.predictor.copy_logit.copy_(torch.tensor([1.5, 4.0]))
    model.save_pretrained(tmp_path / "model")
    loaded = type(model).from_pretrained(tmp_path / "model")
    assert loaded.config.predictor.copy_logit == 2.5
    assert torch.equal(loaded.predictor.copy_logit, torch.tensor([1.5, 4.0]))


def test_a_negative_bonus_is_refused():
    with pytest.raises(ValueError, match="copy_logit"):
        tiny(copy_logit=-1.0)


def test_a_config_written_before_the_bonus_loads_without_it(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "copy_logit")
    assert model.config.predictor.copy_logit == 0.0 and model.predictor.copy_logit is None
