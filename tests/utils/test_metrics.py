"""PSNR: known values, and the trainers' wrappers agree with their former formulas."""

from __future__ import annotations

import pytest
import torch

from aime_rl.utils.metrics import psnr


def test_psnr_known_values_and_both_wrappers_agree_with_the_old_formulas():
    from aime_rl.training.perception import psnr as perception_psnr
    from aime_rl.world_model.imagination import psnr_per_step

    target = torch.zeros(2, 3, 3, 4, 4)
    prediction = torch.full_like(target, 0.1)  # MSE 0.01 everywhere -> 20 dB
    torch.testing.assert_close(psnr(prediction, target), torch.tensor(20.0))
    assert perception_psnr(prediction, target) == pytest.approx(20.0)
    torch.testing.assert_close(psnr_per_step(target, prediction), torch.full((3,), 20.0))
    assert psnr(target, target).item() == pytest.approx(100.0)  # MSE floored at 1e-10
    clipped = psnr(torch.full((2, 2), 1.5), torch.ones(2, 2))  # the prediction is clipped to [0, 1]
    assert clipped.item() == pytest.approx(100.0)
    # uint8 is read as [0, 255]: 51 / 255 = 0.2, 0.1 away from the target
    torch.testing.assert_close(
        psnr(torch.full((4,), 51, dtype=torch.uint8), torch.full((4,), 0.1)), torch.tensor(20.0)
    )
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 3), torch.zeros(3, 2))

    # random videos: the same numbers as the two functions gave before they shared one implementation
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 5, 3, 8, 8, generator=g)
    pred = torch.rand(3, 5, 3, 8, 8, generator=g) * 1.2 - 0.1
    old_overall = 10 * torch.log10(1.0 / torch.mean((pred.clamp(0, 1) - truth) ** 2).clamp_min(1e-10))
    assert perception_psnr(pred, truth) == pytest.approx(float(old_overall), rel=1e-6)
    old_per_step = (-10.0 * torch.log10((truth - pred.clamp(0, 1)).square().mean(dim=(2, 3, 4)))).mean(0)
    torch.testing.assert_close(psnr_per_step(truth, pred), old_per_step)
    torch.testing.assert_close(psnr(pred, truth, dim=(2, 3, 4)).mean(0), old_per_step)
