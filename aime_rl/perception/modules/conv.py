"""Causal spatio-temporal conv blocks for the tokenizer's UNet-style encoder and decoder.

Every block works on video features ``[B, C, T, H, W]`` and is **causal in time**: the output at time t depends on
inputs at times ``<= t`` only. Temporal kernels are padded on the past side by repeating the first input — not with
zeros, which would make a frame's tokens depend on its position in the clip for as long as the receptive field
reaches back (a static scene then gives the same tokens at every t). Normalisation is per frame (GroupNorm over
``C, H, W`` of one frame, never over T).

Every block also has a streaming form, ``step(x_t, cache)``, that takes one time step ``[B, C, H, W]`` and a
:class:`StreamCache` holding the last ``kernel_t - 1`` inputs of each temporal convolution. Offline and streaming
compute the same sums on the same numbers (to float rounding; the tokens agree exactly in the tests). A cache entry
is a fixed-size tensor: memory does not grow with the number of steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...utils.validation import row_index


class StreamCache:
    """Per-layer state of a streaming causal conv stack.

    ``buffers[name]`` holds the last ``kernel_t - 1`` inputs ``[B, C, kernel_t - 1, H, W]`` of the temporal conv
    called ``name``; ``phase[name]`` counts the inputs a strided conv has seen (to know when it emits);
    ``started[name]`` (bool ``[B]``) says which rows have seen an input. A row's first input fills its history,
    exactly like the offline replicate padding, so a fresh cache reproduces offline results.
    """

    def __init__(self, batch_size: int, device: torch.device | str = "cpu"):
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.buffers: dict[str, torch.Tensor] = {}
        self.phase: dict[str, torch.Tensor] = {}
        self.started: dict[str, torch.Tensor] = {}

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart the rows where ``mask`` (bool ``[B]``) is True; all rows when ``mask`` is None."""
        if mask is None:
            self.buffers.clear()
            self.phase.clear()
            self.started.clear()
            return
        for started in self.started.values():
            started[mask] = False
        for phase in self.phase.values():
            phase[mask] = 0

    def select(self, rows: torch.Tensor) -> StreamCache:
        """An independent cache of the chosen rows: bool mask ``[B]`` or int64 indices ``[k]`` → batch ``k``.

        Every buffer ``[B, C, kernel_t - 1, H, W]``, phase ``[B]`` and started ``[B]`` becomes its own copy of the
        rows (``[k, ...]``), so stepping either cache never changes the other. Raises ``ValueError`` naming ``rows``.
        """
        index = row_index(rows, self.batch_size, self.device)
        selected = StreamCache(index.numel(), self.device)
        selected.buffers = {name: buffer[index] for name, buffer in self.buffers.items()}
        selected.phase = {name: phase[index] for name, phase in self.phase.items()}
        selected.started = {name: started[index] for name, started in self.started.items()}
        return selected

    def nbytes(self) -> int:
        """Bytes held by all buffers (for checking that memory stays bounded)."""
        return sum(b.numel() * b.element_size() for b in self.buffers.values())


class CausalConv3d(nn.Module):
    """``Conv3d`` with kernel ``(kernel_t, k, k)``, first-input padding on the past side of time, 'same' in space.

    With ``stride_t = 2`` output step j sees inputs ``<= 2j + 1`` (it is emitted after input ``2j + 1``).
    ``kernel_t = 1`` makes it a per-frame 2D convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        kernel_t: int = 3,
        stride: int = 1,
        stride_t: int = 1,
    ):
        super().__init__()
        if kernel_t < stride_t:
            raise ValueError(f"kernel_t={kernel_t} must be >= stride_t={stride_t}")
        self.kernel_t = kernel_t
        self.stride_t = stride_t
        self.time_pad = kernel_t - stride_t
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(kernel_t, kernel_size, kernel_size),
            stride=(stride_t, stride, stride),
            padding=(0, kernel_size // 2, kernel_size // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C_out, T / stride_t, H / stride, W / stride]``."""
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0), mode="replicate")
        return self.conv(x)

    def step(
        self, x: torch.Tensor, cache: StreamCache, name: str, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One input step ``[B, C, H, W]`` → ``(y [B, C_out, H', W'], emitted bool [B])``.

        Only rows where ``active`` (bool ``[B]``) is True take the step (their history advances). ``emitted[b]`` is
        False where the row was inactive or where a strided conv has not completed an output step; ``y`` is then
        meaningless for that row and the caller must not use it.
        """
        x = x.unsqueeze(2)
        if self.kernel_t == 1:
            return self._conv_one_window(x), active
        history = cache.buffers.get(name)
        started = cache.started.get(name)
        if history is None:
            history = x.expand(-1, -1, self.kernel_t - 1, -1, -1)
            started = torch.zeros_like(active)
        elif not bool(started.all()):  # rows after a reset: their first input is their past
            history = torch.where(started.view(-1, 1, 1, 1, 1), history, x.expand_as(history))
        cache.started[name] = started | active
        window = torch.cat([history, x], dim=2)
        if bool(active.all()):
            cache.buffers[name] = window[:, :, 1:]  # a view: no copy on the common path
        else:
            cache.buffers[name] = torch.where(active.view(-1, 1, 1, 1, 1), window[:, :, 1:], history)
        return self._conv_one_window(window), active & self._advance_phase(cache, name, active)

    def _conv_one_window(self, window: torch.Tensor) -> torch.Tensor:
        """The conv3d of exactly ``kernel_t`` frames ``[B, C, kernel_t, H, W]`` → one output step ``[B, C_out, H', W']``.

        Same maths as the offline conv3d, run as a conv2d with time folded into channels: PyTorch sends small
        batch-1 3D convs to a slow native kernel, while this takes the fast path.
        """
        conv = self.conv
        frames, padding = window.flatten(1, 2), conv.padding[1:]
        if conv.padding_mode != "zeros":
            frames = F.pad(frames, (padding[1], padding[1], padding[0], padding[0]), mode=conv.padding_mode)
            padding = (0, 0)
        return F.conv2d(frames, conv.weight.flatten(1, 2), conv.bias, conv.stride[1:], padding)

    def _advance_phase(self, cache: StreamCache, name: str, active: torch.Tensor) -> torch.Tensor:
        """Count inputs per row; True where this input completes an output step of the strided conv."""
        if self.stride_t == 1:
            return torch.ones_like(active)
        phase = cache.phase.get(name)
        if phase is None:
            phase = torch.zeros(active.shape[0], dtype=torch.long, device=active.device)
        cache.phase[name] = phase + active.long()
        return (phase + 1) % self.stride_t == 0


#: How the convs pad H and W (``TokenizerConfig.padding``): "zeros" (the seed) or "replicate" (the border pixels).
SPATIAL_PADDINGS = ("zeros", "replicate")


def set_spatial_padding(module: nn.Module, padding: str) -> None:
    """Make every :class:`CausalConv3d` in ``module`` pad H and W with ``padding`` (one of :data:`SPATIAL_PADDINGS`).

    Zeros are a dark frame around the image: on a uniform background every conv layer then writes the distance
    to the border into its output, so a cell's features (and its token) say where it is as much as what it shows.
    Replicated borders keep a uniform background uniform at every layer: identical patches get identical features
    wherever they are, and the codebook is spent on content.
    """
    if padding not in SPATIAL_PADDINGS:
        raise ValueError(f"padding must be one of {SPATIAL_PADDINGS}, got {padding!r}")
    for layer in module.modules():
        if isinstance(layer, CausalConv3d):
            layer.conv.padding_mode = padding


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame on its own (statistics over ``C/groups, H, W``, never over time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` or one step ``[B, C, H, W]`` → same shape."""
        if x.dim() == 4:
            return super().forward(x)
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(super().forward(frames), "(b t) c h w -> b c t h w", b=x.shape[0])


def group_norm(channels: int) -> FrameGroupNorm:
    """Per-frame GroupNorm with up to 32 groups that divide ``channels``."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return FrameGroupNorm(groups, channels, eps=1e-6)


class CausalResBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(drop(silu(norm(conv(silu(norm(x)))))))`` with causal convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_t: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_t=kernel_t)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel_t=kernel_t)
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h

    def step(
        self, x: torch.Tensor, cache: StreamCache, name: str, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``[B, C_in, H, W] -> ([B, C_out, H, W], emitted [B])`` (see :meth:`CausalConv3d.step`)."""
        h, _ = self.conv1.step(F.silu(self.norm1(x)), cache, f"{name}.conv1", active)
        h, emitted = self.conv2.step(self.dropout(F.silu(self.norm2(h))), cache, f"{name}.conv2", active)
        return self.shortcut(x.unsqueeze(2)).squeeze(2) + h, emitted


class Downsample(nn.Module):
    """Halve H and W (and T when ``temporal=True``, causally) with a strided causal conv."""

    def __init__(self, channels: int, kernel_t: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(
            channels,
            channels,
            kernel_size=3,
            kernel_t=max(kernel_t, 3) if temporal else kernel_t,
            stride=2,
            stride_t=2 if temporal else 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C, T or T/2, H/2, W/2]``."""
        return self.conv(x)

    def step(
        self, x: torch.Tensor, cache: StreamCache, name: str, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``[B, C, H, W] -> ([B, C, H/2, W/2], emitted [B])`` (see :meth:`CausalConv3d.step`)."""
        return self.conv.step(x, cache, f"{name}.conv", active)


class Upsample(nn.Module):
    """Double H and W (nearest + causal conv); with ``temporal=True`` also double T.

    Temporal upsampling turns each step into two (channels → time, "depth-to-time"), so decoded frames
    ``2j, 2j+1`` come from token step j and earlier.
    """

    def __init__(self, channels: int, kernel_t: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.to_time = nn.Conv3d(channels, 2 * channels, kernel_size=1) if temporal else None
        self.conv = CausalConv3d(channels, channels, kernel_size=3, kernel_t=kernel_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C, T or 2T, 2H, 2W]``."""
        if self.to_time is not None:
            x = rearrange(self.to_time(x), "b (two c) t h w -> b c (t two) h w", two=2)
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.conv(x)
