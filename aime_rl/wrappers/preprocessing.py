"""Frames from any pixel env, in the shape the perception model wants.

Env frames are channels-last uint8 images: ``[H, W, 3]`` RGB, ``[H, W, 1]`` or ``[H, W]`` grayscale (repeated to 3
channels). Four channels are refused: ``[84, 84, 4]`` is as likely four stacked grayscale frames as RGBA, and
reading a frame stack as one RGBA frame would silently drop a frame and mix three others into colours. They come
either from the observations (image observation space) or, for state-based envs made with
``render_mode="rgb_array"``, from ``render()``. :func:`to_model_frames` turns
one frame or a batch into the model's input, uint8 ``[N, 3, h, w]``, resizing with
``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` (no opencv).
"""

from __future__ import annotations

import os
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from aime_rl.perception import CausalPerceiverIO
from aime_rl.utils.images import resize_uint8

FrameSource = Literal["observation", "render"]
IMAGE_CHANNELS = (1, 3)
FOUR_CHANNELS_MESSAGE = (
    "got 4 channels: stacked frames and RGBA frames are not supported (4 channels could be either); give the "
    "env RGB [H, W, 3] or grayscale [H, W] / [H, W, 1] frames, e.g. remove a FrameStack wrapper (the context "
    "model sees the past itself) or drop the alpha channel"
)

__all__ = [
    "FrameSource",
    "is_image_space",
    "frame_source_for",
    "frame_source_from",
    "to_model_frames",
    "load_perception_model",
]


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 ``Box`` of shape ``[H, W]`` or ``[H, W, C]`` with ``C`` in (1, 3) (channels last)."""
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8:
        return False
    shape = space.shape
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in IMAGE_CHANNELS)


def frame_source_from(observation_space: gym.Space, render_mode: str | None, what: str) -> FrameSource:
    """``"observation"`` for an image observation space, else ``"render"`` when ``render_mode == "rgb_array"``.

    Raises ``ValueError`` naming ``what`` (the env), the observation space and the render mode otherwise, and for a
    4-channel uint8 image space (stacked or RGBA frames are not supported).
    """
    if is_image_space(observation_space):
        return "observation"
    if _is_four_channel_image_space(observation_space):
        raise ValueError(f"{what} observation space {observation_space}: {FOUR_CHANNELS_MESSAGE}")
    if render_mode == "rgb_array":
        return "render"
    raise ValueError(
        f"{what} has no frames: its observation space {observation_space} is not a uint8 image "
        "([H, W], [H, W, 1] or [H, W, 3]) and its render_mode is "
        f"{render_mode!r}; make it with render_mode='rgb_array' to use the rendered frames"
        + image_space_hint(observation_space)
    )


def image_space_hint(space: gym.Space) -> str:
    """What to change in an image-like observation space that is not the uint8 ``[H, W, C]`` frames taken."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 3:
        return ""
    if space.shape[0] in (1, 3) and space.shape[-1] not in (1, 3):
        return ", or give channels-last frames (transpose [C, H, W] to [H, W, C])"
    if space.dtype != np.uint8 and space.shape[-1] in (1, 3):
        return ", or give uint8 frames (scale float images in [0, 1] by 255)"
    return ""


def _is_four_channel_image_space(space: gym.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 4
    )


def frame_source_for(env: gym.Env) -> FrameSource:
    """Where ``env``'s frames come from: ``"observation"`` (image observations) or ``"render"`` (``render()``).

    Raises ``ValueError`` when the observations are not images and ``env.render_mode`` is not ``"rgb_array"``.
    """
    return frame_source_from(env.observation_space, env.render_mode, f"env {env}")


def _as_channels_last_batch(frames: np.ndarray) -> np.ndarray:
    """``[H, W]``, ``[H, W, C]`` or ``[N, H, W, C]`` → ``[N, H, W, C]`` (``C`` in 1, 3); no empty dims."""
    if frames.ndim == 2:
        frames = frames[..., None]
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim == 4 and frames.shape[-1] == 4:
        raise ValueError(f"frames of shape {tuple(frames.shape)}: {FOUR_CHANNELS_MESSAGE}")
    if frames.ndim != 4 or frames.shape[-1] not in IMAGE_CHANNELS:
        raise ValueError(
            "frames must be [H, W], [H, W, C] or [N, H, W, C] with C in (1, 3), "
            f"got shape {tuple(frames.shape)}"
        )
    if 0 in frames.shape:
        raise ValueError(f"frames must not be empty, got shape {tuple(frames.shape)}")
    return frames


def to_model_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Env frames → model frames, uint8 ``[N, 3, h, w]`` with ``(h, w) = size``.

    Args:
        frames: uint8 ``[H, W]``, ``[H, W, C]`` or ``[N, H, W, C]``, ``C`` in (1, 3): grayscale is repeated to
            RGB. 4 channels (stacked or RGBA frames) raise ``ValueError``.
        size: ``(h, w)`` of the model (``CausalPerceiverIO.frame_size``).

    Frames of another size are resized with antialiased bilinear interpolation; frames of the right size are
    only transposed (no float round trip).
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got dtype {frames.dtype}")
    frames = _as_channels_last_batch(frames)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [N, C, H, W]
    channels = video.shape[1]
    if channels == 1:
        video = video.expand(-1, 3, -1, -1)
    return resize_uint8(video, size).contiguous()


def load_perception_model(
    model_or_dir: CausalPerceiverIO | str | os.PathLike, device: str | torch.device = "cpu"
) -> CausalPerceiverIO:
    """A ``CausalPerceiverIO`` in eval mode on ``device``: the given model or ``from_pretrained(directory)``.

    A directory that does not exist or does not hold a checkpoint raises ``ValueError``.
    """
    if isinstance(model_or_dir, CausalPerceiverIO):
        model = model_or_dir
    elif isinstance(model_or_dir, (str, os.PathLike)):
        if not os.path.isdir(model_or_dir):
            raise ValueError(
                f"model_or_dir {str(model_or_dir)!r} is not a directory; expected a CausalPerceiverIO checkpoint "
                "written by save_pretrained (config.json + model.safetensors)"
            )
        model = CausalPerceiverIO.from_pretrained(model_or_dir)
    else:
        raise ValueError(
            f"model_or_dir must be a CausalPerceiverIO or a checkpoint directory, got {type(model_or_dir).__name__}"
        )
    return model.to(device).eval()
