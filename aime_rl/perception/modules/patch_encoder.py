"""PatchEncoder: each token cell's features from that cell's own pixels alone (``TokenizerConfig.encoder="patch"``).

The seed's UNet encoder sees the whole frame from every cell (3×3 convs over several levels, GroupNorm statistics
per frame), so when a ball moves, the features of cells it never touches move too and their tokens flip. Here each
``downsample × downsample`` pixel patch goes through the same small MLP on its own (a ViT patch embedding with two
hidden layers), so a cell's token changes exactly when its pixels do: static cells keep their tokens by
construction, and identical patches get identical tokens wherever they are. Motion is left to the Perceiver,
which sees a window of frames.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .conv import StreamCache


def cell_mlp(in_features: int, hidden_features: int, out_features: int) -> nn.Sequential:
    """The per-cell MLP of the patch encoder and decoder: two hidden layers (Linear, LayerNorm, SiLU), then a
    linear output; ``[..., in_features] → [..., out_features]``."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_features),
        nn.LayerNorm(hidden_features),
        nn.SiLU(),
        nn.Linear(hidden_features, hidden_features),
        nn.LayerNorm(hidden_features),
        nn.SiLU(),
        nn.Linear(hidden_features, out_features),
    )


class PatchEncoder(nn.Module):
    """Video ``[B, C, T, H, W]`` in ``[-1, 1]`` → features ``[B, code_dim, T, H/downsample, W/downsample]``.

    Args:
        in_channels: image channels C.
        code_dim: output channels (the quantizer's input).
        downsample: side of the pixel patch behind one token cell.
        hidden_channels: width of the MLP's two hidden layers.
    """

    def __init__(self, in_channels: int, code_dim: int, downsample: int, hidden_channels: int):
        super().__init__()
        self.downsample = downsample
        self.mlp = cell_mlp(in_channels * downsample**2, hidden_channels, code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, code_dim, T, h, w]``."""
        patches = rearrange(x, "b c t (h p) (w q) -> b t h w (c p q)", p=self.downsample, q=self.downsample)
        return rearrange(self.mlp(patches), "b t h w c -> b c t h w")

    def step(self, x: torch.Tensor, cache: StreamCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame ``[B, C, H, W]`` → ``(features [B, code_dim, h, w], emitted bool [B])`` (every frame emits a
        token step; nothing is cached)."""
        features = self.forward(x.unsqueeze(2)).squeeze(2)
        return features, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
