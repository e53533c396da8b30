"""Animated GIFs of frame clips, encoded with Pillow (what :mod:`aime_rl.utils.tensorboard` writes as image summaries).

``SummaryWriter.add_video`` silently writes nothing with moviepy 2.x (and without moviepy), so videos are encoded
here as animated GIFs and written as *image* summaries: TensorBoard's image dashboard animates GIFs.

Frame layouts accepted by :func:`encode_gif` (and :func:`as_uint8_hwc`):

- float ``[T, 3, H, W]`` in ``[0, 1]`` (channels-first, as the models produce; values are clipped to ``[0, 1]``);
- uint8 ``[T, H, W, 3]`` in ``[0, 255]`` (channels-last, as Gymnasium envs produce).

``torch.Tensor`` and ``numpy.ndarray`` are both accepted; tensors may live on any device.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

__all__ = ["as_uint8_hwc", "encode_gif", "gif_size"]


def encode_gif(frames: torch.Tensor | np.ndarray, fps: float = 8) -> bytes:
    """Encode a clip as an animated GIF that loops forever.

    Args:
        frames: float ``[T, 3, H, W]`` in ``[0, 1]`` (clipped) or uint8 ``[T, H, W, 3]``; ``T >= 1``.
        fps: frames per second, > 0. GIF stores delays in 1/100 s, so the delay is ``round(100 / fps)``
            centiseconds (at least 1); browsers slow down delays under 2 cs, so keep ``fps <= 50``.

    Returns:
        The GIF file as bytes (``b"GIF89a..."``).

    Each frame gets its own adaptive palette (median cut, no dithering): a frame with at most 256 distinct
    colours is stored exactly; richer frames are approximated without dither noise. Pillow merges identical
    consecutive frames into one longer frame, so a clip with repeated frames decodes with fewer than ``T``
    frames but plays for the same total time.

    Raises:
        ValueError: ``frames`` has the wrong type, rank, layout, dtype, is empty or holds NaN/inf; ``fps <= 0``.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rgb_frames = as_uint8_hwc(frames, name="frames")
    images = [_to_palette_image(frame) for frame in rgb_frames]
    delay_ms = 10 * max(1, round(100 / fps))
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=delay_ms,
        loop=0,
        optimize=False,
        disposal=1,  # keep the previous frame under the next one (frames are full-size and opaque)
    )
    return buffer.getvalue()


def as_uint8_hwc(frames: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """Validate ``frames`` (see :func:`encode_gif`) and return uint8 ``[T, H, W, 3]`` as a numpy array."""
    if isinstance(frames, np.ndarray):
        try:
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        except TypeError as err:
            raise ValueError(f"{name} has an unsupported numpy dtype {frames.dtype}") from err
    if not isinstance(frames, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy.ndarray (float [T, 3, H, W] or uint8 [T, H, W, 3]), "
            f"got {type(frames).__name__}"
        )
    shape = tuple(frames.shape)
    if frames.dim() != 4 or 0 in shape:
        raise ValueError(
            f"{name} must have shape float [T, 3, H, W] or uint8 [T, H, W, 3] with no empty dims, got {shape}"
        )
    frames = frames.detach().cpu()
    if frames.dtype == torch.uint8:
        if shape[-1] != 3:
            raise ValueError(f"{name} as uint8 must have shape [T, H, W, 3] (channels last), got {shape}")
        return frames.contiguous().numpy()
    if not frames.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {frames.dtype}")
    if shape[1] != 3:
        raise ValueError(f"{name} as float must have shape [T, 3, H, W] (channels first), got {shape}")
    if not torch.isfinite(frames).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return _float_chw_to_uint8_hwc(frames).numpy()


def _float_chw_to_uint8_hwc(frames: torch.Tensor) -> torch.Tensor:
    """float ``[..., 3, H, W]`` in ``[0, 1]`` (clipped) -> uint8 ``[..., H, W, 3]``, rounded to nearest."""
    scaled = frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return scaled.movedim(-3, -1).contiguous()


def _to_palette_image(rgb: np.ndarray) -> Image.Image:
    """uint8 ``[H, W, 3]`` -> Pillow "P" image with an adaptive, undithered palette of at most 256 colours."""
    return Image.fromarray(rgb).quantize(  # uint8 [H, W, 3] is read as RGB
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


def gif_size(gif: bytes) -> tuple[int, int]:
    """``(height, width)`` of an encoded GIF, read from its logical screen descriptor."""
    width = int.from_bytes(gif[6:8], "little")
    height = int.from_bytes(gif[8:10], "little")
    return height, width
