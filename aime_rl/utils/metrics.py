"""Image-quality metrics shared by the perception trainers and the world model.

:func:`psnr` is the one PSNR of the library. ``aime_rl.training.perception.psnr`` (a float over everything) and
``aime_rl.world_model.imagination.psnr_per_step`` (``[T]``, per frame then averaged over the batch) are thin
wrappers around it, and both models' open-loop rollouts score their per-step PSNR with
``psnr(prediction, truth, dim=(-3, -2, -1)).mean(0)`` (see :func:`psnr_per_step`).
"""

from __future__ import annotations

import torch

__all__ = ["MIN_MSE", "psnr", "psnr_per_step"]

#: Floor of the mean squared error, so identical images score ``10 * log10(1 / 1e-10) = 100`` dB, not inf.
MIN_MSE = 1e-10


def psnr(
    prediction: torch.Tensor,
    target: torch.Tensor,
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 * log10(1 / MSE)``, of images with pixels in ``[0, 1]``.

    Args:
        prediction: float (any range: it is clipped to ``[0, 1]``) or uint8 ``[0, 255]`` (divided by 255).
        target: the reference, same shape; float in ``[0, 1]`` (not clipped) or uint8 (divided by 255). It is
            moved to ``prediction``'s device.
        dim: the dimensions the squared error is averaged over before the log; the rest are kept.
            ``None``: all of them (one PSNR of the overall MSE, a 0-dim tensor). For videos
            ``[B, T, 3, H, W]``, ``dim=(-3, -2, -1)`` gives one PSNR per frame ``[B, T]``.

    Returns:
        float32 tensor of PSNRs in dB (MSE floored at :data:`MIN_MSE`, so at most 100 dB).

    Raises:
        ValueError: ``prediction`` and ``target`` have different shapes.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    prediction = _unit_float(prediction).clamp(0.0, 1.0)
    target = _unit_float(target).to(prediction.device)
    squared_error = (prediction - target).square()
    mse = squared_error.mean() if dim is None else squared_error.mean(dim=dim)
    return -10.0 * torch.log10(mse.clamp_min(MIN_MSE))


def psnr_per_step(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-step PSNR of videos ``[B, T, C, H, W]``: the PSNR of each frame, averaged over the batch, ``[T]``.

    This is what both models log as ``rollout/psnr/step_k`` (and, on the repeated last observed frame, as
    ``rollout/copy_last_psnr/step_k``); see :mod:`aime_rl.utils.tensorboard`.
    """
    if prediction.dim() != 5:
        raise ValueError(f"prediction must have shape [B, T, C, H, W], got {tuple(prediction.shape)}")
    return psnr(prediction, target, dim=(-3, -2, -1)).mean(0)


def _unit_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
