"""``make_optimizer``: AdamW with decay on matrices only, fused where torch has the kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aime_rl.training.optim import make_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def test_weight_decay_applies_to_matrices_only():
    optimizer = make_optimizer(_model(), lr=1e-3, weight_decay=0.1)
    decays = {p.ndim: group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays == {2: 0.1, 1: 0.0}


def test_the_optimiser_is_fused_on_cpu_and_steps_like_the_plain_one():
    fused_model, plain_model = _model(), _model()
    fused = make_optimizer(fused_model, lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(
        [
            {"params": [p for p in plain_model.parameters() if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in plain_model.parameters() if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    if torch.torch_version.TorchVersion(torch.__version__) >= "2.4":  # CPU fused AdamW came with torch 2.4
        assert fused.defaults["fused"] is True
    x = torch.randn(32, 8)
    for model, optimizer in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_parameters_without_a_fused_kernel_get_the_plain_optimiser():
    with torch.device("meta"):
        model = nn.Linear(4, 4)  # no fused kernel on "meta": torch would only fail at the first step()
    assert make_optimizer(model, lr=1e-3, weight_decay=0.0).defaults["fused"] is False


def test_a_submodule_with_an_lr_scale_trains_at_that_multiple_of_the_rate():
    model = _model()
    model[2].lr_scale = 3.0
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert [rates[id(p)] for p in model[2].parameters()] == [pytest.approx(3e-3)] * 2
    assert [rates[id(p)] for p in model[0].parameters()] == [pytest.approx(1e-3)] * 2
    decays = {
        (p.ndim, group["lr_scale"]): group["weight_decay"]
        for group in optimizer.param_groups
        for p in group["params"]
    }
    assert decays == {(2, 1.0): 0.1, (1, 1.0): 0.0, (2, 3.0): 0.1, (1, 3.0): 0.0}


def test_the_schedule_scales_every_group_alike():
    model = _model()
    model[2].lr_scale = 3.0
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert sorted(group["lr"] for group in optimizer.param_groups) == pytest.approx(
        [5e-4, 5e-4, 1.5e-3, 1.5e-3]
    )
    assert scheduler.base_lrs == [group["initial_lr"] for group in optimizer.param_groups]


@pytest.mark.parametrize("scale", [0.0, -1.0, True, "3"])
def test_an_lr_scale_that_is_not_a_positive_number_is_refused(scale):
    model = _model()
    model[2].lr_scale = scale
    with pytest.raises(ValueError, match="lr_scale must be a number > 0"):
        make_optimizer(model, lr=1e-3, weight_decay=0.0)


def test_the_optimiser_trains_only_the_parameters_it_is_given():
    model = _model()
    model[2].lr_scale = 2.0
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.1, params=model[2].parameters())
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert set(rates) == {id(p) for p in model[2].parameters()}
    assert set(rates.values()) == {2e-3}
