"""The tokenizer's causal UNet-style encoder and decoder (no skip connections across the quantizer).

Channels grow ``base_channels × (1, 2, 4, 4, …)`` level by level while H and W halve; ``downsample`` must be a power
of two. With ``use_3d_conv=False`` every temporal kernel has size 1 (per-frame 2D convolutions). With
``temporal_downsample=True`` the first level also halves T causally and the decoder's last level restores it.

With ``patch_size=p > 1`` the encoder starts with a space-to-depth "patchify" step (each ``p × p`` pixel patch becomes
one position with ``C · p²`` channels) and the decoder ends with the inverse; the conv levels then cover the
remaining factor ``downsample / p``. This skips the full-resolution level, the most expensive one per frame.
``padding`` says how every conv pads H and W (:func:`~aime_rl.perception.modules.conv.set_spatial_padding`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .conv import (
    CausalConv3d,
    CausalResBlock,
    Downsample,
    StreamCache,
    Upsample,
    group_norm,
    set_spatial_padding,
)


def level_channels(base_channels: int, num_levels: int) -> list[int]:
    """Channels at the input of each level and at the bottom: ``[base, base, 2·base, 4·base, 4·base, …]``."""
    return [base_channels] + [base_channels * min(2**i, 4) for i in range(num_levels)]


def num_levels_for(downsample: int, patch_size: int = 1) -> int:
    """Conv levels ``log2(downsample / patch_size)``; ``ValueError`` unless both are powers of two ≥ 1 and
    ``patch_size`` divides ``downsample``."""
    if downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"downsample must be a power of two (1, 2, 4, 8, …), got {downsample}")
    if patch_size < 1 or patch_size & (patch_size - 1) or patch_size > downsample:
        raise ValueError(
            f"patch_size must be a power of two between 1 and downsample={downsample}, got {patch_size}"
        )
    return int(math.log2(downsample // patch_size))


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Space-to-depth: ``[B, C, (T,) H, W] -> [B, C·p², (T,) H/p, W/p]`` (identity for ``p = 1``)."""
    if patch_size == 1:
        return x
    pattern = (
        "b c t (h p1) (w p2) -> b (c p1 p2) t h w" if x.dim() == 5 else "b c (h p1) (w p2) -> b (c p1 p2) h w"
    )
    return rearrange(x, pattern, p1=patch_size, p2=patch_size)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Depth-to-space, the inverse of :func:`patchify`: ``[B, C·p², T, h, w] -> [B, C, T, h·p, w·p]``."""
    if patch_size == 1:
        return x
    return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=patch_size, p2=patch_size)


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
        patch_size: int = 1,
        padding: str = "zeros",
    ):
        super().__init__()
        kernel_t = 3 if use_3d_conv else 1
        levels = num_levels_for(downsample, patch_size)
        if temporal_downsample and levels == 0:
            raise ValueError(
                "temporal_downsample needs downsample / patch_size >= 2 (it happens in the first level)"
            )
        self.patch_size = patch_size
        channels = level_channels(base_channels, levels)
        self.stem = CausalConv3d(in_channels * patch_size**2, channels[0], kernel_t=kernel_t)
        self.blocks = nn.ModuleList()
        for i in range(levels):
            for j in range(num_res_blocks):
                c_in = channels[i] if j == 0 else channels[i + 1]
                self.blocks.append(CausalResBlock(c_in, channels[i + 1], kernel_t, dropout))
            self.blocks.append(Downsample(channels[i + 1], kernel_t, temporal=temporal_downsample and i == 0))
        self.blocks.append(CausalResBlock(channels[-1], channels[-1], kernel_t, dropout))
        self.norm_out = group_norm(channels[-1])
        self.proj_out = CausalConv3d(channels[-1], code_dim, kernel_size=1, kernel_t=1)
        set_spatial_padding(self, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, code_dim, T', h, w]``."""
        h = self.stem(patchify(x, self.patch_size))
        for block in self.blocks:
            h = block(h)
        return self.proj_out(F.silu(self.norm_out(h)))

    def step(self, x: torch.Tensor, cache: StreamCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame ``[B, C, H, W]`` → ``(features [B, code_dim, h, w], emitted bool [B])``.

        ``emitted[b]`` is False where, with temporal downsampling, this frame does not complete a token step.
        """
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        h, active = self.stem.step(patchify(x, self.patch_size), cache, "stem", active)
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
        patch_size: int = 1,
        padding: str = "zeros",
    ):
        super().__init__()
        kernel_t = 3 if use_3d_conv else 1
        levels = num_levels_for(downsample, patch_size)
        self.patch_size = patch_size
        channels = level_channels(base_channels, levels)
        self.proj_in = CausalConv3d(code_dim, channels[-1], kernel_t=kernel_t)
        self.blocks = nn.ModuleList([CausalResBlock(channels[-1], channels[-1], kernel_t, dropout)])
        for i in reversed(range(levels)):
            self.blocks.append(Upsample(channels[i + 1], kernel_t, temporal=temporal_downsample and i == 0))
            for j in range(num_res_blocks):
                c_out = channels[i] if j == num_res_blocks - 1 else channels[i + 1]
                self.blocks.append(CausalResBlock(channels[i + 1], c_out, kernel_t, dropout))
        self.norm_out = group_norm(channels[0])
        self.proj_out = CausalConv3d(channels[0], out_channels * patch_size**2, kernel_t=1)
        set_spatial_padding(self, padding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, code_dim, T', h, w] -> [B, C, T, H, W]``."""
        h = self.proj_in(z)
        for block in self.blocks:
            h = block(h)
        return unpatchify(self.proj_out(F.silu(self.norm_out(h))), self.patch_size)
