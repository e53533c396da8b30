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
encoded as animated GIFs with Pillow (:mod:`aime_rl.utils.gif`) and written as *image* summaries: TensorBoard's image dashboard
animates GIFs. :func:`read_event_images` reads image summaries back from the event files (for tests and
reports), which is how the GIF path is verified.

Frame layouts accepted by :func:`encode_gif` / :func:`add_gif`:

- float ``[T, 3, H, W]`` in ``[0, 1]`` (channels-first, as the models produce; values are clipped to ``[0, 1]``);
- uint8 ``[T, H, W, 3]`` in ``[0, 255]`` (channels-last, as Gymnasium envs produce).

``torch.Tensor`` and ``numpy.ndarray`` are both accepted; tensors may live on any device.

The frames of a rollout video (:func:`rollout_grid`, :func:`label_rollout_frames`, :func:`rollout_description`) are
drawn in :mod:`aime_rl.utils.rollout_video`; they and :func:`encode_gif` are importable from here as well.

Writers
-------

:func:`find_tensorboard_writer` finds the ``SummaryWriter`` of SB3's TensorBoard output (``tensorboard_log=``), the
one every rollout callback writes its videos to by default.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.gif import encode_gif, gif_size
from aime_rl.utils.rollout_video import (
    CONTEXT_BORDER_COLOR,
    PREDICTED_BORDER_COLOR,
    label_rollout_frames,
    rollout_description,
    rollout_grid,
)
from aime_rl.utils.validation import as_float_frames

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

_RGB_COLORSPACE = 3  # Summary.Image.colorspace: 1 grayscale, 2 grayscale+alpha, 3 RGB, 4 RGBA
_IMAGES_PLUGIN = "images"


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
    height, width = gif_size(gif)
    image = Summary.Image(height=height, width=width, colorspace=_RGB_COLORSPACE, encoded_image_string=gif)
    value = Summary.Value(tag=tag, image=image)
    if description:
        value.metadata.CopyFrom(SummaryMetadata(summary_description=description))
    summary = Summary(value=[value])
    # SummaryWriter has no public "add a prebuilt Summary" method; its own add_image/add_scalar go through
    # this same default FileWriter (created on first use, recreated after close()).
    writer._get_file_writer().add_summary(summary, global_step, walltime)


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
