"""Building blocks of the :class:`~aime_rl.world_model.vrnn.VRNN`: MLPs and the token-grid encoder and decoder.

- :func:`mlp`: the posterior, context and reward/continue heads (``Linear → LayerNorm → SiLU → Linear``).
- :class:`TokenGridEncoder`: the frame embedding ``e_t`` from the tokenizer's quantized latents.
- :class:`TokenGridDecoder`: the frame head, belief → token logits.

The VRNN assembles these (and its prior layers) in ``VRNN.__init__``; the attribute names there fix the keys of
its ``state_dict``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

__all__ = ["TokenGridDecoder", "TokenGridEncoder", "mlp"]


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear → LayerNorm → SiLU → Linear``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim)
    )


class TokenGridEncoder(nn.Module):
    """Quantized latents ``[N, code_dim, h, w]`` → frame embedding ``[N, embed_dim]``.

    1×1 conv to ``channels``, a 3×3 conv (stride 2 when the grid is at least 4×4), flatten, linear, LayerNorm.
    """

    def __init__(self, code_dim: int, grid: tuple[int, int], channels: int, embed_dim: int):
        super().__init__()
        stride = 2 if min(grid) >= 4 else 1
        out_grid = [(size - 1) // stride + 1 for size in grid]
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(channels * out_grid[0] * out_grid[1], embed_dim),
            nn.LayerNorm(embed_dim),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


class TokenGridDecoder(nn.Module):
    """Features ``[N, F]`` → token logits ``[N, h, w, G, num_codes]``.

    ``Linear(F → C·h·w)``, reshape to a ``[C, h, w]`` map, a residual 3×3 conv, then a 1×1 conv to ``G · num_codes``.
    """

    def __init__(
        self, feature_dim: int, grid: tuple[int, int], channels: int, num_heads: int, num_codes: int
    ):
        super().__init__()
        self.grid, self.channels = grid, channels
        self.num_heads, self.num_codes = num_heads, num_codes
        self.project = nn.Linear(feature_dim, channels * grid[0] * grid[1])
        self.mix = nn.Sequential(
            nn.GroupNorm(1, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.out = nn.Sequential(
            nn.GroupNorm(1, channels), nn.SiLU(), nn.Conv2d(channels, num_heads * num_codes, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.project(features).view(-1, self.channels, *self.grid)
        x = x + self.mix(x)
        logits = self.out(x)
        return rearrange(logits, "n (g k) h w -> n h w g k", g=self.num_heads)
