"""LoRA fine-tuning adapters: low-rank updates ``W + (alpha / r) B A`` on frozen ``nn.Linear`` layers.

Workflow (the public import is ``from aime_rl.perception import add_lora, lora_parameters, merge_lora,
remove_lora``)::

    names = add_lora(model, rank=8, alpha=16.0)           # wraps q_proj, k_proj, ... and freezes the rest
    optimizer = torch.optim.AdamW(lora_parameters(model))
    ...                                                    # train
    merge_lora(model)                                      # plain nn.Linear layers again, update folded in
    # or remove_lora(model)                                # plain nn.Linear layers again, update discarded

Freezing and restoring ``requires_grad``:
    :func:`add_lora` sets ``requires_grad=False`` on **every** parameter of the model that is not a LoRA factor
    (norms, embeddings and untargeted layers included) and remembers each parameter's previous flag.
    :func:`merge_lora` and :func:`remove_lora` put those flags back (the merged layer's new weight and bias take
    the flags of the weight and bias they replace), so after either call the model trains exactly the parameters
    it trained before :func:`add_lora`. The remembered flags live in a private attribute of the model.

Only plain ``nn.Linear`` layers (and subclasses that go through ``forward``) are wrapped; a layer shared under
several names is wrapped once and every name then points to the same :class:`LoRALinear`. The ``out_proj`` of
``nn.MultiheadAttention`` is refused: that module reads the weight directly and would bypass the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "LoRALinear",
    "add_lora",
    "has_lora",
    "lora_parameters",
    "merge_lora",
    "remove_lora",
]

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")

# Attribute on the model holding ``[(parameter, requires_grad before add_lora), ...]``.
_SAVED_FLAGS_ATTR = "_lora_saved_requires_grad"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    ``forward(x) = base(x) + (alpha / rank) * dropout(x) @ lora_a.T @ lora_b.T``

    Args:
        base: the layer to adapt, kept as ``self.base``; its parameters are frozen (``requires_grad=False``).
        rank: inner dimension ``r`` of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout probability on the LoRA input (the base path never sees dropout).

    Parameters:
        lora_a: ``[rank, in_features]``, Kaiming-uniform init (as ``nn.Linear``).
        lora_b: ``[out_features, rank]``, zeros, so a fresh adapter leaves the output unchanged.

    Shapes: ``x [..., in_features] -> [..., out_features]``.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.base_requires_grad = {name: p.requires_grad for name, p in base.named_parameters()}
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"

    def reset_lora_parameters(self) -> None:
        """Kaiming-uniform ``lora_a`` and zero ``lora_b``: the update starts at exactly zero."""
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)
        return self.base(x) + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / rank) * lora_b @ lora_a``: ``[out_features, in_features]``, in float32 or wider."""
        compute_dtype = torch.promote_types(self.lora_a.dtype, torch.float32)
        return self.scaling * (self.lora_b.to(compute_dtype) @ self.lora_a.to(compute_dtype))

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A NEW ``nn.Linear`` with weight ``W + delta_weight()`` and a copy of the bias; ``self`` is unchanged.

        The sum is formed in float32 (or wider) and cast to the base dtype, so it is exact up to float rounding.
        The new parameters take the ``requires_grad`` flags the base had before it was wrapped.
        """
        base = self.base
        merged = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        delta = self.delta_weight()
        merged.weight.copy_((base.weight.to(delta.dtype) + delta).to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        for name, parameter in merged.named_parameters():
            parameter.requires_grad_(self.base_requires_grad.get(name, True))
        return merged

    merge = merged_linear  # alias: ``merge()`` returns the merged layer, it does not mutate ``self``

    def original_linear(self) -> nn.Linear:
        """The wrapped ``base`` layer with its ``requires_grad`` flags restored (the update is discarded)."""
        for name, parameter in self.base.named_parameters():
            parameter.requires_grad_(self.base_requires_grad.get(name, True))
        return self.base


# ----------------------------------------------------------------------------------------------------------------
# Whole-model functions
# ----------------------------------------------------------------------------------------------------------------


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_names: Iterable[str] = DEFAULT_LORA_TARGETS,
) -> list[str]:
    """Wrap every ``nn.Linear`` whose attribute name is in ``target_names`` with :class:`LoRALinear`, in place.

    A layer matches when the last component of its qualified name equals a target (``"blocks.0.attn.q_proj"``
    matches ``"q_proj"``). Afterwards every parameter of ``model`` except the LoRA factors is frozen; the previous
    ``requires_grad`` flags are remembered for :func:`merge_lora` / :func:`remove_lora`. Calling it again adds
    adapters to further layers (layers that already have one are skipped).

    Returns:
        Qualified names of the replaced layers, in module order.

    Raises:
        ValueError: if no ``nn.Linear`` matched (naming the targets), or a target is the ``out_proj`` of an
            ``nn.MultiheadAttention``.
    """
    targets = (target_names,) if isinstance(target_names, str) else tuple(target_names)
    sites = _matching_linear_sites(model, set(targets))
    if not sites:
        raise ValueError(
            f"add_lora found no nn.Linear named any of target_names={targets} in {type(model).__name__} "
            f"(layers that already have LoRA are skipped)"
        )
    _remember_requires_grad(model)
    wrapped: dict[int, LoRALinear] = {}
    replaced = []
    for qualified_name, parent, attribute, linear in sites:
        if id(linear) not in wrapped:
            wrapped[id(linear)] = LoRALinear(linear, rank=rank, alpha=alpha, dropout=dropout)
            replaced.append(qualified_name)
        setattr(parent, attribute, wrapped[id(linear)])
    _freeze_all_but_lora(model)
    return replaced


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA factors (``lora_a``, ``lora_b`` of every :class:`LoRALinear`), each listed once."""
    parameters: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, LoRALinear):
            parameters += [module.lora_a, module.lora_b]
    return parameters


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` contains at least one :class:`LoRALinear`."""
    return any(isinstance(module, LoRALinear) for module in model.modules())


def merge_lora(model: nn.Module) -> list[str]:
    """Replace every :class:`LoRALinear` by a new ``nn.Linear`` with the update folded in, in place.

    ``requires_grad`` flags of all parameters return to what they were before :func:`add_lora`.

    Returns:
        Qualified names of the merged layers.
    """
    return _unwrap_all(model, LoRALinear.merged_linear)


def remove_lora(model: nn.Module) -> list[str]:
    """Put the original ``nn.Linear`` objects back (the LoRA update is discarded), in place.

    ``requires_grad`` flags of all parameters return to what they were before :func:`add_lora`.

    Returns:
        Qualified names of the restored layers.
    """
    return _unwrap_all(model, LoRALinear.original_linear)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _child_sites(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """Every ``(qualified_name, parent, attribute, child)`` edge, not descending into :class:`LoRALinear`.

    Reads ``_modules`` directly so a module registered under two attributes of one parent yields both edges.
    """
    for parent_name, parent in model.named_modules():
        if isinstance(parent, LoRALinear):
            continue
        for attribute, child in parent._modules.items():
            if child is not None:
                qualified = f"{parent_name}.{attribute}" if parent_name else attribute
                yield qualified, parent, attribute, child


def _matching_linear_sites(
    model: nn.Module, targets: set[str]
) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    sites = []
    for qualified, parent, attribute, child in _child_sites(model):
        if attribute not in targets or not isinstance(child, nn.Linear):
            continue
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(
                f"cannot add LoRA to {qualified}: nn.MultiheadAttention reads out_proj.weight directly and "
                f"would bypass the adapter"
            )
        sites.append((qualified, parent, attribute, child))
    return sites


def _unwrap_all(model: nn.Module, unwrap: Callable[[LoRALinear], nn.Linear]) -> list[str]:
    if isinstance(model, LoRALinear):
        raise ValueError("model is itself a LoRALinear; call model.merged_linear() or use model.base instead")
    sites = [site for site in _child_sites(model) if isinstance(site[3], LoRALinear)]
    replacements: dict[int, nn.Linear] = {}
    names = []
    for qualified_name, parent, attribute, lora_layer in sites:
        if id(lora_layer) not in replacements:
            replacements[id(lora_layer)] = unwrap(lora_layer)
            names.append(qualified_name)
        setattr(parent, attribute, replacements[id(lora_layer)])
    _restore_requires_grad(model, replacements, sites)
    return names


def _remember_requires_grad(model: nn.Module) -> None:
    """Record ``requires_grad`` of parameters not yet recorded (LoRA factors excluded) on the model."""
    saved: list[tuple[nn.Parameter, bool]] = model.__dict__.setdefault(_SAVED_FLAGS_ATTR, [])
    known = {id(parameter) for parameter, _ in saved}
    lora_ids = {id(parameter) for parameter in lora_parameters(model)}
    for parameter in model.parameters():
        if id(parameter) not in known and id(parameter) not in lora_ids:
            saved.append((parameter, parameter.requires_grad))


def _freeze_all_but_lora(model: nn.Module) -> None:
    lora_ids = {id(parameter) for parameter in lora_parameters(model)}
    for parameter in model.parameters():
        if id(parameter) not in lora_ids:
            parameter.requires_grad_(False)


def _restore_requires_grad(model: nn.Module, replacements: dict[int, nn.Linear], sites) -> None:
    """Give every recorded parameter (and the merged copies of recorded base weights) its pre-LoRA flag."""
    saved: list[tuple[nn.Parameter, bool]] = model.__dict__.pop(_SAVED_FLAGS_ATTR, [])
    flag_of = {id(parameter): flag for parameter, flag in saved}
    for parameter, flag in saved:
        parameter.requires_grad_(flag)
    for _, _, _, lora_layer in sites:
        new_linear = replacements[id(lora_layer)]
        for name, old_parameter in lora_layer.base.named_parameters():
            if id(old_parameter) in flag_of:
                getattr(new_linear, name).requires_grad_(flag_of[id(old_parameter)])
