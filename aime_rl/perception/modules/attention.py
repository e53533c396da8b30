"""Multi-head attention and pre-LayerNorm residual layers on ``F.scaled_dot_product_attention``.

Masks are boolean with ``True`` = may attend. Keys and values can be projected once and reused
(:meth:`CrossAttentionLayer.keys_values`), which is how the streaming context model caches past frames. Optional
rotary time positions make scores depend only on ``query_time − key_time``; an optional learned "null" key/value
that every query can attend to keeps rows with no visible key well defined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .position import RotaryEmbedding


class MLP(nn.Module):
    """Pre-LayerNorm feed-forward block ``fc2(gelu(fc1(norm(x))))`` with hidden width ``widening_factor · C``."""

    def __init__(self, channels: int, widening_factor: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, widening_factor * channels)
        self.fc2 = nn.Linear(widening_factor * channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C] -> [..., C]`` (the residual is added by the caller)."""
        return self.dropout(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class MultiHeadAttention(nn.Module):
    """Multi-head attention from ``num_q_channels`` queries to ``num_kv_channels`` keys/values.

    Args:
        rotary_time: rotate queries and keys by their time positions (RoPE over half of each head's channels).
        null_kv: add one learned key/value per head that every query may attend to (a "no information" slot).
    """

    def __init__(
        self,
        num_q_channels: int,
        num_kv_channels: int,
        num_heads: int,
        dropout: float = 0.0,
        rotary_time: bool = False,
        null_kv: bool = False,
    ):
        super().__init__()
        if num_q_channels % num_heads:
            raise ValueError(f"channels={num_q_channels} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = num_q_channels // num_heads
        self.q_proj = nn.Linear(num_q_channels, num_q_channels)
        self.k_proj = nn.Linear(num_kv_channels, num_q_channels)
        self.v_proj = nn.Linear(num_kv_channels, num_q_channels)
        self.o_proj = nn.Linear(num_q_channels, num_q_channels)
        self.dropout = dropout
        # Rotary positions on the first half of each head's channels. The null key lives in the other half only,
        # so its score does not depend on the query's absolute time (scores stay shift-invariant).
        self.rotary_dim = 2 * (self.head_dim // 4) if rotary_time else 0
        self.rotary = RotaryEmbedding(self.rotary_dim) if self.rotary_dim else None
        if null_kv:
            self.null_k = nn.Parameter(torch.randn(num_heads, 1, self.head_dim - self.rotary_dim) * 0.02)
            self.null_v = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))
        else:
            self.null_k = self.null_v = None

    def keys_values(self, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, C_kv]`` → projected, unrotated keys and values ``[B, heads, L, head_dim]`` each."""
        split = "b l (h d) -> b h l d"
        return rearrange(self.k_proj(x_kv), split, h=self.num_heads), rearrange(
            self.v_proj(x_kv), split, h=self.num_heads
        )

    def attend(
        self,
        x_q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        q_time: torch.Tensor | None = None,
        k_time: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries ``[B, Lq, C]`` over keys/values ``[B, heads, Lk, d]`` → ``[B, Lq, C]``.

        ``mask``: bool ``[B or 1, Lq, Lk]``; ``q_time``: ``[Lq]`` or ``[B, Lq]``; ``k_time``: ``[Lk]`` or
        ``[B, Lk]`` (float or int; used only with ``rotary_time``); ``key_bias``: ``[B, heads, Lk]`` added to every
        query's score of each key, or ``[B or 1, heads, Lq, Lk]`` per query (the null key gets 0), or None.
        """
        q = self._queries(x_q, q_time)
        keys, values, mask, key_bias = self._with_null_key(keys, values, mask, k_time, key_bias)
        return self._attention(q, keys, values, mask, key_bias)

    def attend_prepared(
        self,
        x_q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        q_time: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Like :meth:`attend`, over keys that are already rotated (:meth:`rotate_keys`) and already start with the
        null key/value (:meth:`null_keys_values`), as a streaming cache keeps them.

        Queries ``[B, Lq, C]``, keys/values ``[B, heads, Lk, d]``, ``mask`` bool ``[B or 1, Lq or 1, Lk]``,
        ``q_time`` ``[B, Lq]`` on the same clock as the keys' rotation, ``key_bias`` ``[B, heads, Lk]`` (the null
        key's included) or None → ``[B, Lq, C]``. Nothing of size ``Lk`` is copied: the cost beyond the attention
        itself does not grow with the cache.
        """
        return self._attention(self._queries(x_q, q_time, exact=True), keys, values, mask, key_bias)

    def weights(
        self,
        x_q: torch.Tensor,
        x_kv: torch.Tensor,
        mask: torch.Tensor | None = None,
        q_time: torch.Tensor | None = None,
        k_time: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention weights of :meth:`forward`: queries ``[B, Lq, C]`` over ``x_kv [B, Lk, C_kv]`` →
        ``[B, heads, Lq, Lk]``, or ``[B, heads, Lq, 1 + Lk]`` with the null key first (``null_kv``).

        Same arguments as :meth:`attend`. Each row sums to 1; dropout is not applied. For inspection ("where does
        each query look?"), not for training.
        """
        q = self._queries(x_q, q_time)
        keys, values = self.keys_values(x_kv)
        keys, _, mask, key_bias = self._with_null_key(keys, values, mask, k_time, key_bias)
        scores = q @ keys.transpose(-1, -2) / self.head_dim**0.5
        scores = scores + _score_bias(mask, key_bias, scores.dtype)
        return scores.softmax(-1)

    def rotate_keys(self, keys: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Keys ``[B, heads, L, d]`` rotated by their time ``[B]`` or ``[B, L]`` (identity without rotary time).

        The rotation runs in float64, so a clock that has run for millions of frames loses no precision: what
        matters is ``q_time − k_time``, and float32 angles of large times would blur it.
        """
        if self.rotary is None:
            return keys
        time = time.view(time.shape[0], -1)  # [B] -> [B, 1], broadcast over the L keys
        return self._rotate(keys, time, exact=True)

    def null_keys_values(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The learned null key and value ``[heads, 1, head_dim]`` each (zeros in the rotated channels), or None."""
        if self.null_k is None:
            return None
        return F.pad(self.null_k, (self.rotary_dim, 0)), self.null_v

    def _queries(self, x_q: torch.Tensor, q_time: torch.Tensor | None, exact: bool = False) -> torch.Tensor:
        q = rearrange(self.q_proj(x_q), "b l (h d) -> b h l d", h=self.num_heads)
        return q if self.rotary is None else self._rotate(q, q_time, exact)

    def _with_null_key(self, keys, values, mask, k_time, key_bias):
        """Rotate ``keys`` by ``k_time`` and put the null key/value first, padding ``mask`` (visible) and
        ``key_bias`` (0) to match: → keys, values ``[B, heads, (1 +) Lk, d]``, mask, key_bias."""
        if self.rotary is not None:
            keys = self._rotate(keys, k_time)
        null = self.null_keys_values()
        if null is None:
            return keys, values, mask, key_bias
        b = keys.shape[0]
        keys = torch.cat([null[0].expand(b, -1, -1, -1).to(keys.dtype), keys], dim=2)
        values = torch.cat([null[1].expand(b, -1, -1, -1).to(values.dtype), values], dim=2)
        mask = None if mask is None else F.pad(mask, (1, 0), value=True)
        key_bias = None if key_bias is None else F.pad(key_bias, (1, 0), value=0.0)
        return keys, values, mask, key_bias

    def _attention(self, q, keys, values, mask, key_bias=None) -> torch.Tensor:
        attn_mask = None if mask is None else mask.unsqueeze(1)
        if key_bias is not None:
            attn_mask = _score_bias(mask, key_bias, q.dtype)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.o_proj(rearrange(out, "b h l d -> b l (h d)"))

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None, **times):
        """``x_q [B, Lq, C]``, ``x_kv [B, Lk, C_kv]`` → ``[B, Lq, C]``."""
        keys, values = self.keys_values(x_kv)
        return self.attend(x_q, keys, values, mask, **times)

    def _rotate(self, x: torch.Tensor, time: torch.Tensor | None, exact: bool = False) -> torch.Tensor:
        if time is None:
            raise ValueError("rotary_time attention needs q_time and k_time")
        if time.dim() == 2:  # [B, L] -> [B, 1, L] to broadcast over heads
            time = time.unsqueeze(1)
        if exact:  # float64 angles and arithmetic: large clocks keep their precision
            return self.rotary.rotate_partial(x.double(), time.to(x.device), self.rotary_dim).to(x.dtype)
        return self.rotary.rotate_partial(x, time.to(x.device), self.rotary_dim)


class CrossAttentionLayer(nn.Module):
    """``x_q + attn(norm(x_q), norm(x_kv))`` followed by ``+ mlp(·)``."""

    def __init__(
        self,
        num_q_channels: int,
        num_kv_channels: int,
        num_heads: int,
        widening_factor: int,
        dropout: float,
        rotary_time: bool = False,
        null_kv: bool = False,
    ):
        super().__init__()
        self.q_norm = nn.LayerNorm(num_q_channels)
        self.kv_norm = nn.LayerNorm(num_kv_channels)
        self.attention = MultiHeadAttention(
            num_q_channels, num_kv_channels, num_heads, dropout, rotary_time=rotary_time, null_kv=null_kv
        )
        self.mlp = MLP(num_q_channels, widening_factor, dropout)
        self.dropout = nn.Dropout(dropout)

    def keys_values(self, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised and projected keys/values ``[B, heads, L, d]`` of ``x_kv [B, L, C_kv]`` (cacheable)."""
        return self.attention.keys_values(self.kv_norm(x_kv))

    def attend(self, x_q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask=None, **times):
        """``x_q [B, Lq, C]`` over cached keys/values → ``[B, Lq, C]`` (see :meth:`MultiHeadAttention.attend`)."""
        x = x_q + self.dropout(self.attention.attend(self.q_norm(x_q), keys, values, mask, **times))
        return x + self.mlp(x)

    def attend_prepared(
        self, x_q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask, q_time, key_bias=None
    ):
        """As :meth:`attend` over a streaming cache's prepared keys (see
        :meth:`MultiHeadAttention.attend_prepared`) → ``[B, Lq, C]``."""
        prepared = self.attention.attend_prepared(self.q_norm(x_q), keys, values, mask, q_time, key_bias)
        x = x_q + self.dropout(prepared)
        return x + self.mlp(x)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None, **times):
        """``x_q [B, Lq, C]``, ``x_kv [B, Lk, C_kv]`` → ``[B, Lq, C]``."""
        return self.attend(x_q, *self.keys_values(x_kv), mask, **times)

    def weights(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None, **times):
        """Attention weights ``[B, heads, Lq, (1 +) Lk]`` of :meth:`forward` (see :meth:`MultiHeadAttention.weights`)."""
        return self.attention.weights(self.q_norm(x_q), self.kv_norm(x_kv), mask, **times)


class SelfAttentionLayer(nn.Module):
    """``x + attn(norm(x))`` followed by ``+ mlp(·)``; attention among the rows of ``x [B, L, C]``."""

    def __init__(self, channels: int, num_heads: int, widening_factor: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = MultiHeadAttention(channels, channels, num_heads, dropout)
        self.mlp = MLP(channels, widening_factor, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, C] -> [B, L, C]``."""
        h = self.norm(x)
        x = x + self.dropout(self.attention(h, h, mask))
        return x + self.mlp(x)


def _score_bias(mask: torch.Tensor | None, key_bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """What to add to the scores ``[B, heads, Lq, Lk]``: ``key_bias`` (0 if None; ``[B, heads, Lk]`` for every
    query alike, or ``[B or 1, heads, Lq, Lk]`` per query) on the keys that ``mask`` (bool ``[B or 1, Lq, Lk]``,
    None = all) lets each query see, −inf on the others."""
    device = key_bias.device if key_bias is not None else None if mask is None else mask.device
    if key_bias is None:
        bias = torch.zeros((), dtype=dtype, device=device)
    else:
        bias = (key_bias.unsqueeze(2) if key_bias.dim() == 3 else key_bias).to(dtype)
    if mask is None:
        return bias
    hidden = torch.tensor(float("-inf"), dtype=dtype, device=device)
    return torch.where(mask.unsqueeze(1), bias, hidden)
