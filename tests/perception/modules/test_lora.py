"""LoRA adapters: identity at init, training only the factors, merge, remove, freezing bookkeeping."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aime_rl.perception.modules.lora import (
    LoRALinear,
    add_lora,
    has_lora,
    lora_parameters,
    merge_lora,
    remove_lora,
)


class ToyAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self.o_proj(F.scaled_dot_product_attention(q, k, v))


class ToyBlock(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(5, dim)  # not a LoRA target
        self.norm = nn.LayerNorm(dim)
        self.attn = ToyAttention(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 2 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.attn(self.norm(h))
        return h + self.mlp(h)


def _toy_model_and_input() -> tuple[ToyBlock, torch.Tensor]:
    torch.manual_seed(0)
    return ToyBlock(), torch.randn(3, 7, 5)


def _train_lora(model: nn.Module, x: torch.Tensor, steps: int = 5, lr: float = 0.1) -> None:
    """Plain SGD on the LoRA factors (by hand: ``torch.optim`` would import dynamo, ~3 s)."""
    parameters = lora_parameters(model)
    target = torch.randn_like(model(x))
    for _ in range(steps):
        F.mse_loss(model(x), target).backward()
        with torch.no_grad():
            for parameter in parameters:
                parameter -= lr * parameter.grad
                parameter.grad = None


def test_add_lora_wraps_targets_and_keeps_output():
    model, x = _toy_model_and_input()
    expected = model(x)
    replaced = add_lora(model, rank=4, alpha=8.0)
    assert replaced == ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc1", "mlp.fc2"]
    assert has_lora(model) and isinstance(model.mlp.fc1, LoRALinear)
    assert isinstance(model.embed, nn.Linear)
    assert model.attn.q_proj.lora_a.shape == (4, 16) and model.attn.q_proj.lora_b.shape == (16, 4)
    assert model.attn.q_proj.scaling == 2.0
    assert torch.equal(model(x), expected)


def test_add_lora_freezes_everything_but_the_factors():
    model, _ = _toy_model_and_input()
    add_lora(model, rank=2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters() if name.endswith(("lora_a", "lora_b"))}
    assert len(lora_parameters(model)) == 12


def test_training_changes_output_but_not_base_parameters():
    model, x = _toy_model_and_input()
    add_lora(model, rank=4, dropout=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    output_before = model.eval()(x).detach()
    _train_lora(model.train(), x)
    for name, p in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, before[name]), name
            assert p.grad is None, name
    assert not torch.allclose(model.eval()(x), output_before, atol=1e-4)


def test_merge_matches_unmerged_output_and_restores_flags():
    model, x = _toy_model_and_input()
    model.norm.weight.requires_grad_(False)  # frozen before add_lora: must stay frozen after merge
    model.mlp.fc2.bias.requires_grad_(False)
    add_lora(model, rank=4)
    _train_lora(model, x)
    expected = model(x).detach()
    bases = {name: module.base for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    base_weights = {name: base.weight.detach().clone() for name, base in bases.items()}

    merged = merge_lora(model)

    assert merged == list(bases)
    assert not has_lora(model)
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert type(model.attn.q_proj) is nn.Linear and model.attn.v_proj.bias is None
    assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-5)
    for name, base in bases.items():  # merging builds new weights, the old ones are untouched
        assert torch.equal(base.weight, base_weights[name])
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert flags.pop("norm.weight") is False and flags.pop("mlp.fc2.bias") is False
    assert all(flags.values())


def test_remove_lora_restores_exact_original():
    model, x = _toy_model_and_input()
    expected = model(x)
    original_q = model.attn.q_proj
    add_lora(model, rank=4)
    _train_lora(model, x)
    assert not torch.allclose(model(x), expected)
    assert remove_lora(model) == [
        "attn.q_proj",
        "attn.k_proj",
        "attn.v_proj",
        "attn.o_proj",
        "mlp.fc1",
        "mlp.fc2",
    ]
    assert model.attn.q_proj is original_q
    assert torch.equal(model(x), expected)
    assert all(p.requires_grad for p in model.parameters())


def test_lora_linear_merged_linear_is_new_and_exact():
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(6, 3), rank=2, alpha=4.0)
    nn.init.normal_(layer.lora_b)
    x = torch.randn(4, 6)
    merged = layer.merged_linear()
    assert merged is not layer.base and merged.weight is not layer.base.weight
    assert torch.allclose(merged(x), layer(x), atol=1e-6)
    assert torch.allclose(merged.weight - layer.base.weight, layer.delta_weight(), atol=1e-6)


def test_add_lora_without_matches_raises_naming_targets():
    model, _ = _toy_model_and_input()
    with pytest.raises(ValueError, match="nonexistent"):
        add_lora(model, target_names=("nonexistent",))
    assert not has_lora(model) and not hasattr(model, "_lora_saved_requires_grad")
    add_lora(model, target_names=("fc1",))
    with pytest.raises(ValueError, match="fc1"):
        add_lora(model, target_names=("fc1",))  # already wrapped


def test_second_add_lora_keeps_original_flags_for_merge():
    model, x = _toy_model_and_input()
    add_lora(model, target_names=("q_proj",))
    assert add_lora(model, target_names=("fc1", "embed")) == ["embed", "mlp.fc1"]
    assert len(lora_parameters(model)) == 6
    merge_lora(model)
    assert all(p.requires_grad for p in model.parameters())


def test_shared_linear_is_wrapped_once():
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({"a": nn.ModuleDict({"fc1": shared}), "b": nn.ModuleDict({"fc1": shared})})
    assert add_lora(model, rank=2) == ["a.fc1"]
    assert model["a"]["fc1"] is model["b"]["fc1"]
    merge_lora(model)
    assert model["a"]["fc1"] is model["b"]["fc1"] and type(model["a"]["fc1"]) is nn.Linear


def test_multihead_attention_out_proj_is_refused():
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="MultiheadAttention"):
        add_lora(model, target_names=("out_proj",))


def test_deepcopy_keeps_lora_bookkeeping():
    model, x = _toy_model_and_input()
    model.norm.bias.requires_grad_(False)
    add_lora(model, rank=2)
    clone = copy.deepcopy(model)
    merge_lora(clone)
    assert clone.norm.bias.requires_grad is False and clone.norm.weight.requires_grad is True
    assert torch.allclose(clone(x), model(x), atol=1e-6)
