"""The token adapters: ids → summed head embeddings, and channels → logits scored against those embeddings."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception.modules.adapter import TiedTokenOutputAdapter, TokenInputAdapter, add_lora


@pytest.fixture
def adapter() -> TokenInputAdapter:
    torch.manual_seed(0)
    return TokenInputAdapter(num_codes=8, num_heads=3, num_channels=16)


def test_embed_ids_sums_one_row_per_head(adapter):
    ids = torch.randint(0, 9, (2, 5, 3))  # the mask id (8) included
    expected = sum(adapter.embeddings[g, ids[..., g]] for g in range(3))
    assert torch.allclose(adapter.embed_ids(ids), expected, atol=1e-6)


def test_the_mask_row_gets_a_gradient_only_where_it_is_read(adapter):
    ids = torch.zeros(4, 3, dtype=torch.long)
    ids[0, 1] = adapter.mask_id
    adapter.embed_ids(ids).sum().backward()
    grad = adapter.embeddings.grad
    assert grad[1, adapter.mask_id].abs().sum() > 0
    assert grad[0, adapter.mask_id].abs().sum() == 0 and grad[2, adapter.mask_id].abs().sum() == 0


@pytest.mark.parametrize("in_channels", [None, 4])
def test_logits_score_each_heads_projection_against_its_code_embeddings(adapter, in_channels):
    output = TiedTokenOutputAdapter(adapter, in_channels=in_channels)
    torch.nn.init.normal_(output.bias)
    x = torch.randn(2, 7, in_channels or 16)
    per_head = output.head_proj(output.norm(x)).unflatten(-1, (3, 16))  # [2, 7, G, D]
    expected = torch.einsum("...gd,gkd->...gk", per_head, adapter.embeddings[:, :-1]) + output.bias
    logits = output(x)
    assert logits.shape == (2, 7, 3, 8)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_the_output_adapter_trains_the_tied_embeddings(adapter):
    output = TiedTokenOutputAdapter(adapter)
    output(torch.randn(5, 16)).logsumexp(-1).sum().backward()
    assert adapter.embeddings.grad[:, :-1].abs().sum() > 0
    assert adapter.embeddings.grad[:, -1].abs().sum() == 0  # the mask row is never a target


def test_a_lora_wrapped_head_map_scores_like_the_plain_one(adapter):
    output = TiedTokenOutputAdapter(adapter)
    x = torch.randn(3, 16)
    expected = output(x)
    add_lora(output, rank=2, target_names=("head_proj",))
    assert not isinstance(output.head_proj, torch.nn.Linear)
    assert torch.allclose(output(x), expected, atol=1e-5)  # LoRA starts as the identity update
