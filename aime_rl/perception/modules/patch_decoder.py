"""PatchDecoder: each token cell's pixels from that cell's code vector alone (``TokenizerConfig.decoder="patch"``).

The mirror of :class:`~aime_rl.perception.modules.patch_encoder.PatchEncoder`: the same small MLP shape, run on
every cell's quantized vector on its own, writes that cell's ``downsample × downsample`` pixel patch. With a patch
encoder a cell's code already says everything about its own pixels (and nothing about its neighbours'), so a
decoder that mixes cells through 3×3 convs over several upsampling levels has little to gain and much to learn:
the UNet decoder spends its first hundreds of steps on the background, while this one learns to draw a small
object at each place in a cell directly (32×32 Catch, 600 steps: foreground PSNR 22.3 → 25.1 dB, in about half
the time; ``benchmarks/README.md``).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .patch_encoder import cell_mlp


class PatchDecoder(nn.Module):
    """Quantized features ``[B, code_dim, T, h, w]`` → video ``[B, C, T, h · downsample, w · downsample]``
    (unbounded; ≈ ``[-1, 1]``, as the UNet decoder's).

    Args:
        out_channels: image channels C.
        code_dim: the quantized vectors' channels.
        downsample: side of the pixel patch behind one token cell.
        hidden_channels: width of the MLP's two hidden layers.
    """

    def __init__(self, out_channels: int, code_dim: int, downsample: int, hidden_channels: int):
        super().__init__()
        self.downsample = downsample
        self.mlp = cell_mlp(code_dim, hidden_channels, out_channels * downsample**2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, code_dim, T, h, w] -> [B, C, T, H, W]``."""
        patches = self.mlp(rearrange(z, "b c t h w -> b t h w c"))
        return rearrange(
            patches, "b t h w (c p q) -> b c t (h p) (w q)", p=self.downsample, q=self.downsample
        )
