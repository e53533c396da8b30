"""Input checks that raise ``ValueError`` naming the argument, the expected and the received shape."""

from __future__ import annotations

import torch


def as_float_video(video: torch.Tensor, name: str = "video", channels: int | None = None) -> torch.Tensor:
    """Check a video ``[B, T, C, H, W]`` and return it as float in ``[0, 1]``.

    uint8 input (``[0, 255]``) is converted; float input is taken as already in ``[0, 1]``. Wrong rank, wrong
    channel count, non-tensor, non-numeric dtypes and NaN/inf raise ``ValueError``.
    """
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [B, T, C, H, W], got {type(video).__name__}")
    if video.dim() != 5:
        raise ValueError(f"{name} must have shape [B, T, C, H, W] (5 dims), got shape {tuple(video.shape)}")
    return _as_float_frames(video, name, channels, channel_dim=2)


def as_float_frames(frames: torch.Tensor, name: str = "frames", channels: int | None = None) -> torch.Tensor:
    """Check one frame per batch row ``[B, C, H, W]`` and return it as float in ``[0, 1]``."""
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [B, C, H, W], got {type(frames).__name__}")
    if frames.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W] (4 dims), got shape {tuple(frames.shape)}")
    return _as_float_frames(frames, name, channels, channel_dim=1)


def _as_float_frames(x: torch.Tensor, name: str, channels: int | None, channel_dim: int) -> torch.Tensor:
    if channels is not None and x.shape[channel_dim] != channels:
        raise ValueError(
            f"{name} must have {channels} channels at dim {channel_dim}, got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return x


def check_spatial_divisible(height: int, width: int, factor: int, name: str = "video") -> None:
    """Raise if ``height``/``width`` are not multiples of the model's spatial ``factor``."""
    if height % factor or width % factor:
        raise ValueError(
            f"{name} height and width must be divisible by downsample={factor}, got {height}x{width}"
        )


def row_index(rows: torch.Tensor, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """Rows of a batch of ``batch_size`` → int64 indices ``[k]`` on ``device`` (for a stream's ``select``).

    ``rows`` is a bool mask ``[batch_size]`` with at least one True, or integer indices ``[k]`` (k >= 1) in
    ``[0, batch_size)``; an index may repeat (each occurrence becomes its own row). Numpy arrays and lists are
    accepted. Anything else raises ``ValueError`` naming ``rows``.
    """
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.shape != (batch_size,):
            raise ValueError(f"rows must be a bool mask [{batch_size}], got shape {tuple(rows.shape)}")
        rows = rows.nonzero().squeeze(1)
    elif rows.is_floating_point() or rows.is_complex() or rows.dim() != 1:
        raise ValueError(
            f"rows must be a bool mask [{batch_size}] or int64 indices [k], got {rows.dtype} {tuple(rows.shape)}"
        )
    if rows.numel() == 0:
        raise ValueError("rows must select at least one row, got none")
    if bool((rows < 0).any()) or bool((rows >= batch_size).any()):
        raise ValueError(
            f"rows must be indices in [0, {batch_size}), got values in [{int(rows.min())}, {int(rows.max())}]"
        )
    return rows.to(device=device, dtype=torch.long)
