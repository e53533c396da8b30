"""The tokenizer's causal UNet-style encoder and decoder (no skip connections across the quantizer).

Channels grow ``base_channels × (1, 2, 4, 4, …)`` level by level while H and W halve; ``downsample`` must be a power
of two. With ``use_3d_conv=False`` every temporal kernel has size 1 (per-frame 2D convolutions). With
``temporal_downsample=True`` the first level also halves T causally and the decoder's last level restores it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .conv import CausalConv3d, CausalResBlock, Downsample, StreamCache, Upsample, group_norm


def level_channels(base_channels: int, num_levels: int) -> list[int]:
    """Channels at the input of each level and at the bottom: ``[base, base, 2·base, 4·base, 4·base, …]``."""
    return [base_channels] + [base_channels * min(2**i, 4) for i in range(num_levels)]


def num_levels_for(downsample: int) -> int:
    """``log2(downsample)``; raises ``ValueError`` unless ``downsample`` is a power of two ≥ 1."""
    if downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"downsample must be a power of two (1, 2, 4, 8, …), got {downsample}")
    return int(math.log2(downsample))


class CausalVideoEncoder(nn.Module):
    """Video ``[B, C, T, H, W]`` in ``[-1, 1]`` → features ``[B, code_dim, T', H/downsample, W/downsample]``."""

    def __init__(
        self,
        in_channels: int,
        code_dim: int,
        base_channels: int,
        downsample: int,
        use_3d_conv: bool,
        temporal_downsample: bool,
        num_res_blocks: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        kernel_t = 3 if use_3d_conv else 1
        levels = num_levels_for(downsample)
        if temporal_downsample and levels == 0:
            raise ValueError("temporal_downsample needs downsample >= 2 (it happens in the first level)")
        channels = level_channels(base_channels, levels)
        self.stem = CausalConv3d(in_channels, channels[0], kernel_t=kernel_t)
        self.blocks = nn.ModuleList()
        for i in range(levels):
            for j in range(num_res_blocks):
                c_in = channels[i] if j == 0 else channels[i + 1]
                self.blocks.append(CausalResBlock(c_in, channels[i + 1], kernel_t, dropout))
            self.blocks.append(Downsample(channels[i + 1], kernel_t, temporal=temporal_downsample and i == 0))
        self.blocks.append(CausalResBlock(channels[-1], channels[-1], kernel_t, dropout))
        self.norm_out = group_norm(channels[-1])
        self.proj_out = CausalConv3d(channels[-1], code_dim, kernel_size=1, kernel_t=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, code_dim, T', h, w]``."""
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.proj_out(F.silu(self.norm_out(h)))

    def step(self, x: torch.Tensor, cache: StreamCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame ``[B, C, H, W]`` → ``(features [B, code_dim, h, w], emitted bool [B])``.

        ``emitted[b]`` is False where, with temporal downsampling, this frame does not complete a token step.
        """
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        h, active = self.stem.step(x, cache, "stem", active)
        for i, block in enumerate(self.blocks):
            h, active = block.step(h, cache, f"blocks.{i}", active)
        z, _ = self.proj_out.step(F.silu(self.norm_out(h)), cache, "proj_out", active)
        return z, active


class CausalVideoDecoder(nn.Module):
    """Quantized features ``[B, code_dim, T', h, w]`` → video ``[B, C, T, H, W]`` (unbounded; ≈ ``[-1, 1]``)."""

    def __init__(
        self,
        out_channels: int,
        code_dim: int,
        base_channels: int,
        downsample: int,
        use_3d_conv: bool,
        temporal_downsample: bool,
        num_res_blocks: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        kernel_t = 3 if use_3d_conv else 1
        levels = num_levels_for(downsample)
        channels = level_channels(base_channels, levels)
        self.proj_in = CausalConv3d(code_dim, channels[-1], kernel_t=kernel_t)
        self.blocks = nn.ModuleList([CausalResBlock(channels[-1], channels[-1], kernel_t, dropout)])
        for i in reversed(range(levels)):
            self.blocks.append(Upsample(channels[i + 1], kernel_t, temporal=temporal_downsample and i == 0))
            for j in range(num_res_blocks):
                c_out = channels[i] if j == num_res_blocks - 1 else channels[i + 1]
                self.blocks.append(CausalResBlock(channels[i + 1], c_out, kernel_t, dropout))
        self.norm_out = group_norm(channels[0])
        self.proj_out = CausalConv3d(channels[0], out_channels, kernel_t=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, code_dim, T', h, w] -> [B, C, T, H, W]``."""
        h = self.proj_in(z)
        for block in self.blocks:
            h = block(h)
        return self.proj_out(F.silu(self.norm_out(h)))
