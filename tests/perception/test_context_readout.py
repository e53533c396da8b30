"""``context_readout_tokens``: the context-prediction term's decoder reads the context as k memory tokens.

With one token every output query's cross-attention returns the same value vector (a softmax over one key), so the
term sees the context through one map as wide as the decoder; with k tokens each query reads its own mix. A
training head only: the context is computed the same way.
"""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import load_without_predictor_key, tiny


def cross_attention_outputs(model, clip, tokens: int, monkeypatch) -> torch.Tensor:
    """What each output query of a context-only decode gets from the decoder's cross-attention ``[B, Q, C]``."""
    predictor = model.predictor
    seen = []
    attention = predictor.decoder.cross_attention.attention
    attend = attention.attend

    def spy(*args, **kwargs):
        seen.append(attend(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(attention, "attend", spy)
    with torch.no_grad():
        context = model.extract_context(clip[:, :2])[:, -1:]  # [B, 1, D]
        memory = predictor.context_readout_memory(context)[:, 0]
        assert memory.shape[1] == tokens
        grid = predictor.tokenizer.token_grid(*clip.shape[-2:])
        ids = torch.full((clip.shape[0], 1, *grid, 2), predictor.input_adapter.mask_id)
        predictor.predict_logits(memory, ids, None)
    return seen[0]


def test_one_readout_token_gives_every_query_the_same_read(clip, monkeypatch):
    torch.manual_seed(0)
    out = cross_attention_outputs(tiny(decoder_channels=16), clip, 1, monkeypatch)
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


def test_several_readout_tokens_give_each_query_its_own_read(clip, monkeypatch):
    torch.manual_seed(0)
    model = tiny(decoder_channels=16, context_readout_tokens=4)
    out = cross_attention_outputs(model, clip, 4, monkeypatch)
    assert not torch.allclose(out, out[:, :1].expand_as(out), atol=1e-4)


def test_the_readout_trains_with_the_context_prediction_term(clip):
    torch.manual_seed(0)
    model = tiny(context_readout_tokens=4, context_prediction_weight=1.0).train()
    model.predictor(clip[:, :6], 4).context_prediction_loss.backward()
    assert model.predictor.context_readout.weight.grad.abs().sum() > 0


def test_the_readout_leaves_the_context_unchanged(clip):
    torch.manual_seed(0)
    plain = tiny()
    with_readout = tiny(context_readout_tokens=4)
    missing, unexpected = with_readout.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("context_readout" in name for name in missing)
    with torch.no_grad():
        assert torch.equal(plain.extract_context(clip), with_readout.extract_context(clip))


@pytest.mark.parametrize("value", [0, 2.0, True])
def test_a_readout_that_is_not_a_count_of_tokens_is_refused(value):
    with pytest.raises(ValueError, match="context_readout_tokens"):
        tiny(context_readout_tokens=value)


def test_a_config_written_before_the_readout_loads_with_one_token(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "context_readout_tokens")
    assert model.config.predictor.context_readout_tokens == 1 and model.predictor.context_readout is None
