"""PerceiverDecoder: output queries cross-attend to latents, then (optionally) self-attend among themselves."""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttentionLayer, SelfAttentionLayer


class PerceiverDecoder(nn.Module):
    """Queries ``[B, Q, D]`` and latents ``[B, N, D_kv]`` → outputs ``[B, Q, D]`` (``D_kv = num_kv_channels``,
    default ``D``).

    The self-attention layers after the cross-attention let masked output positions see the known ones, which
    MaskGIT-style iterative decoding needs.
    """

    def __init__(
        self,
        num_channels: int,
        num_cross_attention_heads: int,
        num_self_attention_heads: int,
        num_self_attention_layers: int,
        widening_factor: int,
        dropout: float,
        num_kv_channels: int | None = None,
    ):
        super().__init__()
        self.cross_attention = CrossAttentionLayer(
            num_channels, num_kv_channels or num_channels, num_cross_attention_heads, widening_factor, dropout
        )
        self.self_attention = nn.ModuleList(
            SelfAttentionLayer(num_channels, num_self_attention_heads, widening_factor, dropout)
            for _ in range(num_self_attention_layers)
        )

    def forward(self, queries: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``[B, Q, D]``, ``[B, N, D_kv]`` → ``[B, Q, D]``."""
        x = self.cross_attention(queries, latents)
        for layer in self.self_attention:
            x = layer(x)
        return x
