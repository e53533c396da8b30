"""TensorBoard helpers: animated GIF summaries, open-loop rollout videos, image grids and an event reader.

``SummaryWriter.add_video`` silently writes nothing with moviepy 2.x (and without moviepy), so videos are
encoded here as animated GIFs with Pillow and written as *image* summaries: TensorBoard's image dashboard
animates GIFs. :func:`read_event_images` reads image summaries back from the event files (for tests and
reports), which is how the GIF path is verified.

Frame layouts accepted by :func:`encode_gif` / :func:`add_gif`:

- float ``[T, 3, H, W]`` in ``[0, 1]`` (channels-first, as the models produce; values are clipped to ``[0, 1]``);
- uint8 ``[T, H, W, 3]`` in ``[0, 255]`` (channels-last, as Gymnasium envs produce).

``torch.Tensor`` and ``numpy.ndarray`` are both accepted; tensors may live on any device.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.validation import as_float_frames, as_float_video

__all__ = [
    "CONTEXT_BORDER_COLOR",
    "PREDICTED_BORDER_COLOR",
    "add_gif",
    "add_image_grid",
    "add_rollout_gif",
    "add_text_once",
    "encode_gif",
    "read_event_images",
    "rollout_grid",
]

#: RGB in ``[0, 1]`` of the border drawn around every cell of a context (observed) time step in :func:`rollout_grid`.
CONTEXT_BORDER_COLOR = (0.0, 1.0, 0.0)
#: RGB in ``[0, 1]`` of the border drawn around every cell of a predicted (imagined) time step.
PREDICTED_BORDER_COLOR = (1.0, 0.0, 0.0)

_RGB_COLORSPACE = 3  # Summary.Image.colorspace: 1 grayscale, 2 grayscale+alpha, 3 RGB, 4 RGBA
_IMAGES_PLUGIN = "images"


# --------------------------------------------------------------------------------------------- GIF encoding


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
    rgb_frames = _as_uint8_hwc(frames, name="frames")
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


def _as_uint8_hwc(frames: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
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
    return Image.fromarray(rgb, mode="RGB").quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


# ------------------------------------------------------------------------------------------ summary writing


def add_gif(
    writer: SummaryWriter,
    tag: str,
    frames: torch.Tensor | np.ndarray,
    global_step: int,
    fps: float = 8,
    walltime: float | None = None,
) -> None:
    """Write ``frames`` as an animated GIF image summary under ``tag`` (shown animated in the Images tab).

    Args:
        writer: the run's ``SummaryWriter``.
        tag: summary tag, e.g. ``"world_model/open_loop"``.
        frames: float ``[T, 3, H, W]`` in ``[0, 1]`` or uint8 ``[T, H, W, 3]`` (see :func:`encode_gif`).
        global_step: training step recorded with the summary.
        fps: playback rate.
        walltime: optional event time (seconds since the epoch); defaults to now.
    """
    gif = encode_gif(frames, fps=fps)
    height, width = _gif_size(gif)
    image = Summary.Image(height=height, width=width, colorspace=_RGB_COLORSPACE, encoded_image_string=gif)
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    # SummaryWriter has no public "add a prebuilt Summary" method; its own add_image/add_scalar go through
    # this same default FileWriter (created on first use, recreated after close()).
    writer._get_file_writer().add_summary(summary, global_step, walltime)


def _gif_size(gif: bytes) -> tuple[int, int]:
    """``(height, width)`` of an encoded GIF, read from its logical screen descriptor."""
    width = int.from_bytes(gif[6:8], "little")
    height = int.from_bytes(gif[8:10], "little")
    return height, width


def add_rollout_gif(
    writer: SummaryWriter,
    tag: str,
    truth: torch.Tensor,
    model: torch.Tensor,
    context_frames: int,
    global_step: int,
    fps: float = 4,
    border: int = 1,
) -> None:
    """Write an open-loop rollout video (rows truth / model / error, see :func:`rollout_grid`) as a GIF.

    Args:
        truth: ``[B, T, 3, H, W]`` real frames, float in ``[0, 1]`` or uint8.
        model: ``[B, T, 3, H, W]`` reconstructions (``t < context_frames``) and predictions (the rest).
        context_frames: number of leading observed frames, ``0 <= context_frames <= T``.
        border: marker border width in pixels.
    """
    grid = rollout_grid(truth, model, context_frames, border=border)
    add_gif(writer, tag, grid, global_step, fps=fps)


def add_image_grid(
    writer: SummaryWriter,
    tag: str,
    images: torch.Tensor,
    global_step: int,
    nrow: int = 8,
) -> None:
    """Write images ``[N, 3, H, W]`` (float in ``[0, 1]``, clipped, or uint8) as one PNG grid, ``nrow`` per row.

    Typical use: reconstructions interleaved with their inputs. Uses ``torchvision.utils.make_grid`` with a
    2-px black padding between images.
    """
    from torchvision.utils import make_grid  # torchvision is imported lazily: it is slow to import

    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    images = as_float_frames(images, name="images", channels=3)
    if images.shape[0] == 0:
        raise ValueError(f"images must hold at least one image, got shape {tuple(images.shape)}")
    grid = make_grid(images.detach().float().cpu().clamp(0.0, 1.0), nrow=nrow, padding=2, pad_value=0.0)
    writer.add_image(tag, grid, global_step, dataformats="CHW")


def add_text_once(writer: SummaryWriter, tag: str, text: str) -> None:
    """Log a status string (e.g. ``"LPIPS: disabled, no backbone weights in the torch hub cache"``) at step 0."""
    writer.add_text(tag, text, global_step=0)


# --------------------------------------------------------------------------------------------- rollout grid


def rollout_grid(
    truth: torch.Tensor,
    model: torch.Tensor,
    context_frames: int,
    border: int = 1,
) -> torch.Tensor:
    """DreamerV3-style open-loop video frames: per time step, rows truth / model / error, batch items as columns.

    Args:
        truth: ``[B, T, 3, H, W]`` real frames, float in ``[0, 1]`` or uint8 ``[0, 255]``.
        model: ``[B, T, 3, H, W]`` the model's frames: reconstructions for the first ``context_frames`` steps,
            open-loop predictions after. Float values are clipped to ``[0, 1]`` for display.
        context_frames: number of leading observed (context) frames, ``0 <= context_frames <= T``.
        border: width in pixels of the marker border drawn around *every* cell, ``>= 0``. Its colour tells the
            phase of the time step: green (:data:`CONTEXT_BORDER_COLOR`) for context steps ``t <
            context_frames``, red (:data:`PREDICTED_BORDER_COLOR`) for predicted steps.

    Returns:
        float ``[T, 3, 3 * (H + 2 * border), B * (W + 2 * border)]`` in ``[0, 1]``. Cell ``(row, b)`` of frame
        ``t`` holds ``truth[b, t]`` (row 0), ``model[b, t]`` (row 1) and the plain per-channel absolute error
        ``|truth[b, t] - model[b, t]|`` of the clipped frames (row 2, not amplified; already in ``[0, 1]``).

    Raises:
        ValueError: bad shapes/dtypes/values, ``truth`` and ``model`` shapes differ, ``context_frames`` or
            ``border`` out of range.
    """
    truth = as_float_video(truth, name="truth", channels=3).detach().float().clamp(0.0, 1.0)
    model = as_float_video(model, name="model", channels=3).detach().float().clamp(0.0, 1.0)
    if truth.shape != model.shape:
        raise ValueError(
            f"truth and model must have the same shape [B, T, 3, H, W], got truth {tuple(truth.shape)} "
            f"and model {tuple(model.shape)}"
        )
    num_steps = truth.shape[1]
    if not 0 <= context_frames <= num_steps:
        raise ValueError(f"context_frames must be in [0, T={num_steps}], got {context_frames}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    model = model.to(truth.device)
    rows = torch.stack([truth, model, (truth - model).abs()], dim=2)  # [B, T, 3 rows, 3, H, W]
    is_context = torch.arange(num_steps, device=truth.device) < context_frames
    cells = _add_phase_borders(rows, is_context, border)  # [B, T, 3 rows, 3, H', W']
    return _tile_cells(cells)


def _add_phase_borders(cells: torch.Tensor, is_context: torch.Tensor, border: int) -> torch.Tensor:
    """Pad every cell ``[B, T, R, 3, H, W]`` by ``border`` px in its step's phase colour (``is_context [T]``)."""
    if border == 0:
        return cells
    batch, steps, rows, channels, height, width = cells.shape
    context_color = cells.new_tensor(CONTEXT_BORDER_COLOR)
    predicted_color = cells.new_tensor(PREDICTED_BORDER_COLOR)
    step_colors = torch.where(is_context[:, None], context_color, predicted_color)  # [T, 3]
    padded = step_colors[None, :, None, :, None, None].expand(
        batch, steps, rows, channels, height + 2 * border, width + 2 * border
    )
    padded = padded.clone()
    padded[..., border : border + height, border : border + width] = cells
    return padded


def _tile_cells(cells: torch.Tensor) -> torch.Tensor:
    """``[B, T, R, 3, H, W]`` -> ``[T, 3, R * H, B * W]``: rows stacked vertically, batch items side by side."""
    return cells.permute(1, 3, 2, 4, 0, 5).flatten(4, 5).flatten(2, 3).contiguous()


# ------------------------------------------------------------------------------------------ event read-back


def read_event_images(logdir: str | os.PathLike) -> dict[str, list[bytes]]:
    """Read every image summary under ``logdir`` back from the event files (for tests and reports).

    Searches ``logdir`` recursively for ``events.out.tfevents.*`` files (in sorted path order) and returns
    ``{tag: [encoded image bytes, ...]}`` in the order the summaries were written. The bytes are the stored
    image files: PNG for ``add_image``/:func:`add_image_grid`, GIF for :func:`add_gif`. Both the legacy
    ``Summary.Image`` form (what ``SummaryWriter`` writes) and the tensor form of TensorBoard's images plugin
    are understood; for the latter, every image of a multi-image summary is returned.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise ValueError(f"logdir is not a directory: {logdir}")
    images: dict[str, list[bytes]] = {}
    for event_file in sorted(logdir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(event_file)).Load():
            for value in event.summary.value:
                encoded = _encoded_images(value)
                if encoded:
                    images.setdefault(value.tag, []).extend(encoded)
    return images


def _encoded_images(value: Summary.Value) -> list[bytes]:
    """The encoded images held by one summary value (empty when it is not an image summary)."""
    if value.HasField("image"):
        return [value.image.encoded_image_string]
    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == _IMAGES_PLUGIN:
        return list(value.tensor.string_val[2:])  # [width, height, image_0, image_1, ...]
    return []
