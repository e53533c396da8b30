"""Image helpers shared by the env wrappers and the replay recorders (one resize, so both see the same pixels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → uint8 ``[N, C, h, w]`` with ``(h, w) = size`` (bilinear, antialiased).

    Runs PyTorch's uint8 resampling kernel directly: the float round trip is ~60× slower with 2 threads on a busy
    CPU. Frames already of ``size`` are returned as they are.
    """
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return F.interpolate(
        video.contiguous(), size=tuple(size), mode="bilinear", antialias=True, align_corners=False
    )
