"""Checks of what a :class:`~aime_rl.world_model.vrnn.VRNN` is given: frames, token ids, contexts, actions.

Each function raises ``ValueError`` naming the argument and returns the input on the model's device (and dtype);
the VRNN calls them with the sizes of its :class:`~aime_rl.world_model.config.VRNNConfig`.

- :func:`check_frames`: frames ``[B, T, 3, H, W]`` at the perceiver's frame size.
- :func:`check_tokens`: token ids ``[B, T, h, w, G]`` on the perceiver's token grid.
- :func:`check_context`: a precomputed context ``[B, T, D]``.
- :func:`encode_actions`: action ids or vectors → float ``[..., action_dim]`` (one-hot for discrete actions);
  :func:`encode_window_actions`: the same for a window ``[B, T]`` (zeros when none are given).
- :func:`step_mask`: the steps ``[B, T]`` whose action is real, from ``is_last``.
- :func:`_check_step_tensor`: a per-step tensor ``[B, T]`` (rewards, terminations, ``is_last``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..utils.validation import as_float_video
from .config import VRNNConfig

__all__ = [
    "check_context",
    "check_frames",
    "check_tokens",
    "encode_actions",
    "encode_window_actions",
    "step_mask",
]


def check_frames(frames: torch.Tensor, frame_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Frames ``[B, T, 3, H, W]`` (uint8, or float in [0, 1]) with ``(H, W) == frame_size`` → float on ``device``."""
    frames = as_float_video(frames, "frames", channels=3)
    expected = tuple(frame_size)
    if tuple(frames.shape[-2:]) != expected:
        raise ValueError(
            f"frames must be [B, T, 3, {expected[0]}, {expected[1]}] (the perceiver's frame size), "
            f"got shape {tuple(frames.shape)}"
        )
    return frames.to(device)


def check_tokens(tokens: torch.Tensor, config: VRNNConfig, device: torch.device) -> torch.Tensor:
    """Integer token ids ``[B, T, h, w, G]`` (or ``[B, T, h, w]`` when ``G = 1``) → ``[B, T, h, w, G]`` on ``device``.

    ``(h, w)`` and ``G`` are ``config.token_grid`` and ``config.num_quantizers``.
    """
    c = config
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point():
        raise ValueError(f"tokens must be an integer tensor [B, T, h, w, G], got {type(tokens).__name__}")
    if c.num_quantizers == 1 and tokens.dim() == 4:
        tokens = tokens.unsqueeze(-1)
    expected = (*c.token_grid, c.num_quantizers)
    if tokens.dim() != 5 or tuple(tokens.shape[2:]) != expected:
        raise ValueError(
            f"tokens must have shape [B, T, {', '.join(map(str, expected))}], got {tuple(tokens.shape)}"
        )
    return tokens.to(device)


def check_context(
    context: torch.Tensor, expected: tuple[int, int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A context of shape ``expected`` (``[B, T, D]``) → the same on ``device`` in ``dtype``."""
    if not isinstance(context, torch.Tensor) or tuple(context.shape) != expected:
        raise ValueError(
            f"context must have shape {list(expected)}, got {tuple(getattr(context, 'shape', ()))}"
        )
    return context.to(device, dtype)


def encode_actions(
    actions: torch.Tensor,
    config: VRNNConfig,
    leading: tuple[int, ...] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Actions → ``dtype`` ``[*leading, action_dim]`` on ``device`` (one-hot for discrete actions).

    Discrete (``config.discrete``): integer ids ``[*leading]`` (or ``[*leading, 1]``) in ``[0, action_dim)``.
    Continuous: float ``[*leading, action_dim]``. ``leading`` (e.g. ``(B, T)``) is checked when given. Raises
    ``ValueError`` naming ``actions``.
    """
    c = config
    actions = torch.as_tensor(actions, device=device)
    if c.discrete:
        if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
            raise ValueError(f"actions must be integer ids (discrete actions), got dtype {actions.dtype}")
        if leading is not None and actions.dim() == len(leading) + 1 and actions.shape[-1] == 1:
            actions = actions.squeeze(-1)
        if leading is not None and tuple(actions.shape) != tuple(leading):
            raise ValueError(
                f"actions must have shape {list(leading)} (integer ids), got {tuple(actions.shape)}"
            )
        if actions.numel() and (actions.min() < 0 or actions.max() >= c.action_dim):
            raise ValueError(
                f"actions must be ids in [0, {c.action_dim}), got values in "
                f"[{int(actions.min())}, {int(actions.max())}]"
            )
        return F.one_hot(actions.long(), c.action_dim).to(dtype)
    expected = (*leading, c.action_dim) if leading is not None else None
    if (
        actions.dim() == 0
        or actions.shape[-1] != c.action_dim
        or (expected is not None and tuple(actions.shape) != expected)
    ):
        want = list(expected) if expected is not None else f"[..., {c.action_dim}]"
        raise ValueError(f"actions must have shape {want} (continuous actions), got {tuple(actions.shape)}")
    if not actions.is_floating_point():
        raise ValueError(f"actions must be float (continuous actions), got dtype {actions.dtype}")
    return actions.to(dtype)


def encode_window_actions(
    actions: torch.Tensor | None,
    config: VRNNConfig,
    b: int,
    t: int,
    device: torch.device,
    dtype: torch.dtype,
    required: bool = False,
) -> torch.Tensor:
    """Actions of a window, ``[B, T]`` ids or ``[B, T, A]`` floats → ``[B, T, A]`` (:func:`encode_actions`).

    ``None``: zeros ``[B, T, A]``, or ``ValueError`` naming ``actions`` when ``required``.
    """
    if actions is None:
        if required:
            raise ValueError(f"actions must be given ([B={b}, T={t}] ids or [B, T, A] floats)")
        return torch.zeros(b, t, config.action_dim, device=device, dtype=dtype)
    if not isinstance(actions, torch.Tensor):
        actions = torch.as_tensor(actions)
    if actions.dim() >= 2 and tuple(actions.shape[:2]) != (b, t):
        raise ValueError(
            f"actions must have leading dims [B={b}, T={t}] like the frames, got shape {tuple(actions.shape)}"
        )
    return encode_actions(actions, config, (b, t), device, dtype)


def step_mask(is_last: torch.Tensor | None, b: int, t: int, device: torch.device) -> torch.Tensor:
    """Bool ``[B, T]`` on ``device``: the steps whose action is real, ``~is_last`` (all of them when ``None``)."""
    if is_last is None:
        return torch.ones(b, t, dtype=torch.bool, device=device)
    return ~_check_step_tensor("is_last", is_last, b, t).to(device, torch.bool)


def _check_step_tensor(name: str, value: torch.Tensor, b: int, t: int) -> torch.Tensor:
    value = torch.as_tensor(value)
    if tuple(value.shape) != (b, t):
        raise ValueError(f"{name} must have shape [B={b}, T={t}], got shape {tuple(value.shape)}")
    return value
