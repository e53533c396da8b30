"""TensorBoard helpers and the library's tag scheme: animated GIF summaries, labelled open-loop rollout videos,
per-step PSNR scalars, image grids and an event reader.

Tag scheme
----------

The perception trainers (:mod:`aime_rl.training.perception`) and the world-model trainer
(:mod:`aime_rl.world_model.training`) write the same names for the same things, so their runs compare side by
side. Horizon steps are **1-based**: ``step_1`` is the first frame the model did not see. ``k = 1 … H``.

==========================================  ========  =================================================  ==========
tag                                         kind      what                                               written by
==========================================  ========  =================================================  ==========
``rollout/open_loop``                       GIF       open-loop rollout: rows truth / model / |error|,   both
                                                      green borders on observed (context) steps, red on
                                                      imagined ones; a header strip draws this legend
``rollout/open_loop/description``           text      the same legend in words (once per writer)         both
``rollout/psnr/step_k``                     scalar    PSNR (dB) of the model's k-th imagined frame       both
``rollout/copy_last_psnr/step_k``           scalar    PSNR of repeating the last observed frame at step  both
                                                      k (the "copy last" baseline)
``rollout/psnr/mean``                       scalar    mean of ``rollout/psnr/step_k`` over k             both
``rollout/copy_last_psnr/mean``             scalar    mean of ``rollout/copy_last_psnr/step_k`` over k   both
``eval/reconstruction_psnr``                scalar    tokenizer encode → decode PSNR on held-out frames  tokenizer
``eval/perplexity/g``, ``eval/usage/g``     scalar    codebook perplexity and usage of head g            tokenizer
``eval/reconstruction``                     PNG       held-out frames (top) and reconstructions          tokenizer
``status/lpips``                            text      whether the LPIPS term is on                       tokenizer
``eval/next_frame_accuracy``                scalar    token accuracy of the next frame predicted in one  context
                                                      pass (argmax) from the frames before it
``eval/next_frame_copy_last_accuracy``      scalar    the same for "copy the last frame's tokens"        context
``eval/next_frame_psnr``                    scalar    PSNR of that one-pass next frame                   context
``eval/next_frame_copy_last_psnr``          scalar    the same for copying the last frame                context
``train/<metric>``                          scalar    training losses and ``train/steps_per_second``     all
==========================================  ========  =================================================  ==========

Text tags get ``/text_summary`` appended by ``SummaryWriter.add_text`` (the event file holds
``rollout/open_loop/description/text_summary``). PSNR is :func:`aime_rl.utils.metrics.psnr`; per-step values are
the PSNR of each frame averaged over the batch (:func:`aime_rl.utils.metrics.psnr_per_step`).

``rollout`` is the default *prefix*: the world model's SB3 callback
(:class:`~aime_rl.world_model.imagination.WorldModelRolloutCallback`) writes the same suffixes under
``world_model/`` (``world_model/open_loop``, ``world_model/psnr/step_k`` …) so that it does not collide with the
perception rollout callback in an agent's run. :func:`add_rollout_gif` and :func:`add_rollout_psnr` write the
rollout rows of the table.

GIFs
----

``SummaryWriter.add_video`` silently writes nothing with moviepy 2.x (and without moviepy), so videos are
encoded here as animated GIFs with Pillow and written as *image* summaries: TensorBoard's image dashboard
animates GIFs. :func:`read_event_images` reads image summaries back from the event files (for tests and
reports), which is how the GIF path is verified.

Frame layouts accepted by :func:`encode_gif` / :func:`add_gif`:

- float ``[T, 3, H, W]`` in ``[0, 1]`` (channels-first, as the models produce; values are clipped to ``[0, 1]``);
- uint8 ``[T, H, W, 3]`` in ``[0, 255]`` (channels-last, as Gymnasium envs produce).

``torch.Tensor`` and ``numpy.ndarray`` are both accepted; tensors may live on any device.

Writers
-------

:func:`find_tensorboard_writer` finds the ``SummaryWriter`` of SB3's TensorBoard output (``tensorboard_log=``), the
one every rollout callback writes its videos to by default.
"""

from __future__ import annotations

import functools
import io
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.validation import as_float_frames, as_float_video

__all__ = [
    "CONTEXT_BORDER_COLOR",
    "PREDICTED_BORDER_COLOR",
    "ROLLOUT_PREFIX",
    "add_gif",
    "add_image_grid",
    "add_rollout_gif",
    "add_rollout_psnr",
    "add_text_once",
    "encode_gif",
    "find_tensorboard_writer",
    "label_rollout_frames",
    "read_event_images",
    "rollout_description",
    "rollout_grid",
    "rollout_psnr_scalars",
]

#: Default prefix of the rollout tags (``rollout/open_loop``, ``rollout/psnr/step_k`` …; see the module docstring).
ROLLOUT_PREFIX = "rollout"

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
    return Image.fromarray(rgb).quantize(  # uint8 [H, W, 3] is read as RGB
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
    description: str | None = None,
) -> None:
    """Write ``frames`` as an animated GIF image summary under ``tag`` (shown animated in the Images tab).

    Args:
        writer: the run's ``SummaryWriter``.
        tag: summary tag, e.g. ``"rollout/open_loop"``.
        frames: float ``[T, 3, H, W]`` in ``[0, 1]`` or uint8 ``[T, H, W, 3]`` (see :func:`encode_gif`).
        global_step: training step recorded with the summary.
        fps: playback rate.
        walltime: optional event time (seconds since the epoch); defaults to now.
        description: optional text stored in the summary's metadata (``summary_description``; TensorBoard shows
            it in the card's info tooltip).
    """
    gif = encode_gif(frames, fps=fps)
    height, width = _gif_size(gif)
    image = Summary.Image(height=height, width=width, colorspace=_RGB_COLORSPACE, encoded_image_string=gif)
    value = Summary.Value(tag=tag, image=image)
    if description:
        value.metadata.CopyFrom(SummaryMetadata(summary_description=description))
    summary = Summary(value=[value])
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
    labels: bool = True,
) -> None:
    """Write an open-loop rollout video (rows truth / model / error, see :func:`rollout_grid`) as a GIF.

    With ``labels`` (the default) every frame gets a header strip (:func:`label_rollout_frames`) naming the rows,
    the border colours and the current step. The same legend in words (:func:`rollout_description`) goes into
    the image summary's metadata and, once per writer, into a text summary ``{tag}/description``.

    Args:
        truth: ``[B, T, 3, H, W]`` real frames, float in ``[0, 1]`` or uint8.
        model: ``[B, T, 3, H, W]`` reconstructions (``t < context_frames``) and predictions (the rest).
        context_frames: number of leading observed frames, ``0 <= context_frames <= T``.
        border: marker border width in pixels.
        labels: draw the header strip (``False``: the bare :func:`rollout_grid`).
    """
    grid = rollout_grid(truth, model, context_frames, border=border)
    frames = label_rollout_frames(grid, context_frames) if labels else grid
    num_columns, num_steps = truth.shape[0], truth.shape[1]
    description = rollout_description(context_frames, num_steps, num_columns, labels=labels)
    add_gif(writer, tag, frames, global_step, fps=fps, description=description)
    add_text_once(writer, f"{tag}/description", description)


def rollout_description(context_frames: int, num_steps: int, num_columns: int, labels: bool = True) -> str:
    """What a rollout GIF of :func:`add_rollout_gif` shows, in words (Markdown, for TensorBoard's text tab)."""
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


def rollout_psnr_scalars(
    model_psnr: Sequence[float] | torch.Tensor, copy_last_psnr: Sequence[float] | torch.Tensor
):
    """The rollout scalars of the tag scheme, keyed without the prefix, horizon steps 1-based.

    Args:
        model_psnr: ``[H]`` the model's PSNR (dB) of imagined steps ``1 … H``.
        copy_last_psnr: ``[H]`` the "repeat the last observed frame" baseline on the same steps.

    Returns:
        ``{"psnr/step_1": …, …, "psnr/step_H": …, "copy_last_psnr/step_1": …, …, "psnr/mean": …,
        "copy_last_psnr/mean": …}`` as floats.
    """
    model_values = [float(v) for v in model_psnr]
    baseline_values = [float(v) for v in copy_last_psnr]
    if not model_values or len(model_values) != len(baseline_values):
        raise ValueError(
            "model_psnr and copy_last_psnr must hold one value per horizon step (same length >= 1), got "
            f"{len(model_values)} and {len(baseline_values)}"
        )
    scalars = {f"psnr/step_{k}": v for k, v in enumerate(model_values, start=1)}
    scalars.update({f"copy_last_psnr/step_{k}": v for k, v in enumerate(baseline_values, start=1)})
    scalars["psnr/mean"] = float(np.mean(model_values))
    scalars["copy_last_psnr/mean"] = float(np.mean(baseline_values))
    return scalars


def add_rollout_psnr(
    writer: SummaryWriter | None,
    prefix: str,
    model_psnr: Sequence[float] | torch.Tensor,
    copy_last_psnr: Sequence[float] | torch.Tensor,
    global_step: int,
) -> dict[str, float]:
    """Write :func:`rollout_psnr_scalars` under ``{prefix}/`` (e.g. ``rollout/psnr/step_1``); returns them
    keyed without the prefix. ``writer=None`` only computes them."""
    scalars = rollout_psnr_scalars(model_psnr, copy_last_psnr)
    if writer is not None:
        for name, value in scalars.items():
            writer.add_scalar(f"{prefix}/{name}", value, global_step)
    return scalars


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


# Texts already written, per writer: {writer: {tag: text}} (weak keys: a closed and dropped writer is forgotten).
_TEXTS_WRITTEN: weakref.WeakKeyDictionary[SummaryWriter, dict[str, str]] = weakref.WeakKeyDictionary()


def add_text_once(writer: SummaryWriter, tag: str, text: str) -> None:
    """Log a status string (e.g. ``"LPIPS: disabled, no backbone weights in the torch hub cache"``) at step 0.

    Once per writer: a later call with the same ``tag`` and ``text`` on the same writer writes nothing (a new
    text under the tag is written). A new writer on the same log directory (a resumed run) writes it again.
    """
    written = _TEXTS_WRITTEN.setdefault(writer, {})
    if written.get(tag) == text:
        return
    writer.add_text(tag, text, global_step=0)
    written[tag] = text


def find_tensorboard_writer(logger: Logger | None) -> SummaryWriter | None:
    """The ``SummaryWriter`` of SB3's TensorBoard output in ``logger`` (the agent's ``tensorboard_log`` run
    directory), or ``None`` when ``logger`` is ``None`` or does not write to TensorBoard.

    Writing videos there puts them in SB3's own event file, next to its scalars; what to do without one (open an
    own writer, or skip the images) is the caller's choice.
    """
    for output in getattr(logger, "output_formats", ()):
        if isinstance(output, TensorBoardOutputFormat):
            return output.writer
    return None


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
    frames = _as_uint8_hwc(grid, name="grid")
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
