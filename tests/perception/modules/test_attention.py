"""Attention over a streaming cache: pre-rotated keys and a null-key prefix give what plain attention gives."""

from __future__ import annotations

import torch

from aime_rl.perception.modules.attention import MultiHeadAttention
from aime_rl.perception.modules.kv_cache import WindowKVCache

HEADS, CHANNELS = 2, 32


def attention() -> MultiHeadAttention:
    return MultiHeadAttention(CHANNELS, CHANNELS, HEADS, rotary_time=True, null_kv=True).eval()


def prepared_keys(attn: MultiHeadAttention, x_kv: torch.Tensor, k_time: torch.Tensor):
    """Keys rotated by their own time, with the null key/value in front, as a streaming cache holds them."""
    keys, values = attn.keys_values(x_kv)
    keys = attn.rotate_keys(keys, k_time)
    null_k, null_v = attn.null_keys_values()
    b = x_kv.shape[0]
    return (
        torch.cat([null_k.expand(b, -1, -1, -1), keys], dim=2),
        torch.cat([null_v.expand(b, -1, -1, -1), values], dim=2),
    )


def test_prepared_keys_give_the_same_output_as_plain_attention():
    attn = attention()
    x_q, x_kv = torch.randn(2, 3, CHANNELS), torch.randn(2, 5, CHANNELS)
    q_time = torch.full((2, 3), 4)
    k_time = torch.arange(5).expand(2, 5)
    mask = torch.tensor([True, True, False, True, True]).expand(2, 3, 5)
    plain = attn.attend(x_q, *attn.keys_values(x_kv), mask, q_time=q_time, k_time=k_time)
    keys, values = prepared_keys(attn, x_kv, k_time)
    prepared = attn.attend_prepared(
        x_q, keys, values, torch.nn.functional.pad(mask, (1, 0), value=True), q_time
    )
    torch.testing.assert_close(prepared, plain, atol=1e-5, rtol=0)


def test_a_clock_that_has_run_for_ten_million_frames_gives_the_same_scores():
    attn = attention()
    x_q, x_kv = torch.randn(1, 2, CHANNELS), torch.randn(1, 4, CHANNELS)
    k_time, q_time = torch.arange(4).view(1, 4), torch.full((1, 2), 3)
    outputs = []
    for offset in (0, 10_000_000):
        keys, values = prepared_keys(attn, x_kv, k_time + offset)
        outputs.append(attn.attend_prepared(x_q, keys, values, None, q_time + offset))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=0)


def test_cache_prefix_is_always_visible_and_survives_writes_and_resets():
    prefix = (torch.randn(HEADS, 1, 4), torch.randn(HEADS, 1, 4))
    cache = WindowKVCache(2, HEADS, 4, tokens_per_step=3, window=2, prefix=prefix)
    assert cache.visible().tolist() == [[True] + [False] * 6] * 2
    for _ in range(3):
        cache.advance()
        cache.write(
            torch.randn(2, HEADS, 3, 4), torch.randn(2, HEADS, 3, 4), rows=torch.tensor([True, False])
        )
    cache.reset(torch.tensor([False, True]))
    assert torch.equal(cache.keys[:, :, :1], prefix[0].expand(2, -1, -1, -1))
    assert torch.equal(cache.values[:, :, :1], prefix[1].expand(2, -1, -1, -1))
    assert cache.visible().tolist() == [[True] * 7, [True] + [False] * 6]
    assert cache.clock.tolist() == [2, -1]


def test_set_prefix_replaces_the_prefix_of_every_row():
    cache = WindowKVCache(3, HEADS, 4, tokens_per_step=1, window=4, prefix=(torch.zeros(HEADS, 1, 4),) * 2)
    new = (torch.ones(HEADS, 1, 4), torch.full((HEADS, 1, 4), 2.0))
    cache.set_prefix(new)
    assert torch.equal(cache.keys[:, :, :1], new[0].expand(3, -1, -1, -1))
    assert torch.equal(cache.values[:, :, :1], new[1].expand(3, -1, -1, -1))


def test_the_attention_weights_reproduce_the_output():
    attn = attention()
    x_q, x_kv = torch.randn(2, 3, CHANNELS), torch.randn(2, 5, CHANNELS)
    times = dict(q_time=torch.full((2, 3), 4), k_time=torch.arange(5).expand(2, 5))
    mask = torch.tensor([True, False, True, True, True]).expand(2, 3, 5)
    weights = attn.weights(x_q, x_kv, mask, **times)  # [B, heads, Lq, 1 + Lk], the null key first
    _, values = attn.keys_values(x_kv)
    values = torch.cat([attn.null_keys_values()[1].expand(2, -1, -1, -1), values], dim=2)
    mixed = torch.einsum("bhqk,bhkd->bqhd", weights, values).flatten(2)
    torch.testing.assert_close(attn.o_proj(mixed), attn(x_q, x_kv, mask, **times), atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, 3))
    assert bool((weights[..., 2] == 0).all())  # the masked key (index 1, after the null key) gets nothing
