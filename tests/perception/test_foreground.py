"""The foreground reconstruction term: small moving objects weigh as much as the static background."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import VQPTTokenizer
from aime_rl.perception.losses import foreground_mask, foreground_mse
from aime_rl.training.perception import foreground_psnr


def ball_clip(frames: int = 6, size: int = 16) -> torch.Tensor:
    """``[1, T, 3, H, W]``: a grey background with one white pixel moving right by one pixel per frame."""
    video = torch.full((1, frames, 3, size, size), 0.4)
    for t in range(frames):
        video[0, t, :, 5, 2 + t] = 1.0
    return video


def test_the_mask_marks_the_moving_object_and_not_the_background():
    mask = foreground_mask(ball_clip())
    assert mask.shape == (1, 6, 1, 16, 16)
    assert mask.sum() == 6 and all(bool(mask[0, t, 0, 5, 2 + t]) for t in range(6))


def test_a_single_frame_has_no_foreground():
    assert not foreground_mask(ball_clip(frames=1)).any()


def test_foreground_mse_averages_over_the_masked_pixels_only():
    target = ball_clip()
    prediction = target.clone()
    prediction[:, :, :, 5, :] = 0.4  # the ball erased: plain MSE barely notices, foreground MSE is large
    mask = foreground_mask(target)
    assert foreground_mse(prediction, target, mask) == pytest.approx(0.36)
    assert torch.mean((prediction - target) ** 2) < 0.01


def test_foreground_psnr_sees_a_missing_ball():
    target = ball_clip()
    erased = target.clone()
    erased[:, :, :, 5, :] = 0.4
    assert foreground_psnr(erased, target) == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.36)).item())
    assert foreground_psnr(target, target) > 90


def test_the_tokenizer_adds_the_term_only_when_weighted(tiny_tokenizer_kwargs):
    video = ball_clip(size=32)
    torch.manual_seed(0)
    plain = VQPTTokenizer(**tiny_tokenizer_kwargs).eval()
    torch.manual_seed(0)
    weighted = VQPTTokenizer(**tiny_tokenizer_kwargs, foreground_weight=2.0).eval()
    with torch.no_grad():
        a, b = plain.loss(video), weighted.loss(video)
    assert a["foreground"] == 0
    assert b["foreground"] > 0
    assert (b["total"] - a["total"]).item() == pytest.approx(2.0 * b["foreground"].item(), rel=1e-4)


def test_a_negative_foreground_weight_is_refused(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="foreground_weight"):
        VQPTTokenizer(**tiny_tokenizer_kwargs, foreground_weight=-1.0)
