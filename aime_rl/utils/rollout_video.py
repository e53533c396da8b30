"""The frames of an open-loop rollout video: rows truth / model / |error| with phase-coloured cell borders
(:func:`rollout_grid`), a header strip with the legend and the current step (:func:`label_rollout_frames`), and
the same legend in words (:func:`rollout_description`). :func:`aime_rl.utils.tensorboard.add_rollout_gif` writes
them as a GIF.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from aime_rl.utils.gif import as_uint8_hwc
from aime_rl.utils.validation import as_float_video

__all__ = [
    "CONTEXT_BORDER_COLOR",
    "PREDICTED_BORDER_COLOR",
    "label_rollout_frames",
    "rollout_description",
    "rollout_grid",
]

#: RGB in ``[0, 1]`` of the border drawn around every cell of a context (observed) time step in :func:`rollout_grid`.
CONTEXT_BORDER_COLOR = (0.0, 1.0, 0.0)
#: RGB in ``[0, 1]`` of the border drawn around every cell of a predicted (imagined) time step.
PREDICTED_BORDER_COLOR = (1.0, 0.0, 0.0)


def rollout_description(context_frames: int, num_steps: int, num_columns: int, labels: bool = True) -> str:
    """What a rollout GIF of :func:`~aime_rl.utils.tensorboard.add_rollout_gif` shows, in words (Markdown, for TensorBoard's text tab)."""
    imagined = num_steps - context_frames
    text = (
        f"Open-loop rollout: {num_columns} sequence(s) side by side, {num_steps} time steps per loop "
        f"({context_frames} observed, then {imagined} imagined). "
        "Rows, top to bottom: **truth** (the real frames); **model** (the model's frames: reconstructions of the "
        "observed frames, then open-loop predictions); **|error|** (per-channel absolute difference "
        "|truth - model|, not amplified). "
        "Cell borders: **green** = context step (the model saw this frame), **red** = imagined step (predicted "
        "without seeing it)."
    )
    if labels:
        text += (
            " The header strip repeats this legend and shows the current step: t = frame index (1-based), "
            "k = imagined step, the k of the `psnr/step_k` and `copy_last_psnr/step_k` scalars."
        )
    return text


# ----------------------------------------------------------------------------------------- rollout labels

_LABEL_PAD = 2  # px around the header strip's text
_LABEL_GAP = 5  # px between two items of a line
_LABEL_TEXT_RGB = (255, 255, 255)
_LABEL_BACKGROUND_RGB = (0, 0, 0)


@functools.lru_cache(maxsize=1)
def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in bitmap font (crisp at this size, no anti-aliasing, nothing to download)."""
    load_bitmap = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
    return load_bitmap() if load_bitmap is not None else ImageFont.load_default()


def _rgb255(color: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in color)


_LabelItem = tuple[str, tuple[int, int, int] | None]  # (text, colour of a swatch drawn before it, or None)


def _label_groups(context_frames: int, num_steps: int, t: int) -> list[list[_LabelItem]]:
    """The header of frame ``t``: one item list per line (items wrap onto further lines when too wide)."""
    context_rgb, predicted_rgb = _rgb255(CONTEXT_BORDER_COLOR), _rgb255(PREDICTED_BORDER_COLOR)
    rows = [("rows:", None), ("truth", None), ("/", None), ("model", None), ("/", None), ("|error|", None)]
    legend = [("context", context_rgb), ("imagined", predicted_rgb)]
    now = [(f"t={t + 1}/{num_steps}", None)]
    if t < context_frames:
        now.append(("context", context_rgb))
    else:
        now += [("imagined", predicted_rgb), (f"k={t - context_frames + 1}", None)]
    return [rows, legend, now]


def _font_metrics() -> tuple[int, int]:
    """``(line height, swatch size)`` of the label font in px."""
    font = _label_font()
    text_height = max(font.getbbox(s)[3] for s in ("Ag|y", "t=10/10"))
    return text_height + 2, max(text_height - 3, 4)


def _item_width(text: str, swatch: tuple[int, int, int] | None) -> int:
    width = int(np.ceil(_label_font().getlength(text)))
    return width + (_font_metrics()[1] + 2 if swatch is not None else 0)


def _layout(groups: list[list[_LabelItem]], width: int) -> list[list[tuple[int, str, tuple | None]]]:
    """Place items left to right, wrapping at ``width``; every group starts a new line."""
    lines = []
    for group in groups:
        line: list[tuple[int, str, tuple | None]] = []
        x = _LABEL_PAD
        for text, swatch in group:
            item_width = _item_width(text, swatch)
            if line and x + item_width > width - _LABEL_PAD:
                lines.append(line)
                line, x = [], _LABEL_PAD
            line.append((x, text, swatch))
            x += item_width + _LABEL_GAP
        lines.append(line)
    return lines


def label_rollout_frames(grid: torch.Tensor | np.ndarray, context_frames: int) -> np.ndarray:
    """Put a header strip on top of every frame of a :func:`rollout_grid` video.

    The strip (white text in Pillow's default bitmap font on black) reads ``rows: truth / model / |error|``, then a
    legend of the border colours (a green swatch ``context``, a red swatch ``imagined``), then the current step:
    ``t=i/T`` and its phase, with ``k=j`` (the 1-based imagined step of ``rollout/psnr/step_j``) on imagined
    steps. Items wrap onto more lines in narrow videos; a video narrower than the widest item is padded with
    black on the right.

    Args:
        grid: float ``[T, 3, H, W]`` in ``[0, 1]`` or uint8 ``[T, H, W, 3]`` (what :func:`rollout_grid` returns).
        context_frames: number of leading observed steps, ``0 <= context_frames <= T``.

    Returns:
        uint8 ``[T, S + H, max(W, W_min), 3]``: the strip of ``S`` rows, the same for every frame but for its
        last line, above the unchanged grid.
    """
    frames = as_uint8_hwc(grid, name="grid")
    num_steps, height, width, _ = frames.shape
    if not 0 <= context_frames <= num_steps:
        raise ValueError(f"context_frames must be in [0, T={num_steps}], got {context_frames}")
    groups = [_label_groups(context_frames, num_steps, t) for t in range(num_steps)]
    widest = max(_item_width(text, swatch) for frame in groups for group in frame for text, swatch in group)
    out_width = max(width, widest + 2 * _LABEL_PAD)
    layouts = [_layout(frame, out_width) for frame in groups]
    line_height, swatch_size = _font_metrics()
    strip_height = max(len(lines) for lines in layouts) * line_height + 2 * _LABEL_PAD
    out = np.zeros((num_steps, strip_height + height, out_width, 3), dtype=np.uint8)
    out[:, :strip_height] = _LABEL_BACKGROUND_RGB
    out[:, strip_height:, :width] = frames
    font = _label_font()
    for t, lines in enumerate(layouts):
        strip = Image.new("RGB", (out_width, strip_height), _LABEL_BACKGROUND_RGB)
        draw = ImageDraw.Draw(strip)
        for row, line in enumerate(lines):
            y = _LABEL_PAD + row * line_height
            for x, text, swatch in line:
                if swatch is not None:
                    top = y + (line_height - swatch_size) // 2
                    draw.rectangle([x, top, x + swatch_size - 1, top + swatch_size - 1], fill=swatch)
                    x += swatch_size + 2
                draw.text((x, y), text, fill=_LABEL_TEXT_RGB, font=font)
        out[t, :strip_height] = np.asarray(strip)
    return out


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
