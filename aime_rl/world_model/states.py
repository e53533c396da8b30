"""State types of the :class:`~aime_rl.world_model.vrnn.VRNN` and the distributions behind them.

- :class:`RecurrentState`: the deterministic memory ``(h_{t-1}, cell_{t-1}, c_{t-1})`` entering a step.
- :class:`StepState`: the state after observing or imagining a frame (adds ``z_t`` and ``c_t``); its
  :attr:`~StepState.belief` is what the heads read.
- :class:`MixturePrior`: the parameters of the stick-breaking Gaussian-mixture prior ``p(z_t | h_{t-1}, c_{t-1})``.
- :func:`_gaussian_sample`: the reparameterised sample of a diagonal Gaussian latent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .stick_breaking import kumaraswamy_mean, sample_kumaraswamy, stick_breaking_log_weights

__all__ = ["MixturePrior", "RecurrentState", "StepState"]


@dataclass
class RecurrentState:
    """The deterministic memory entering step t (all ``[B, ·]``).

    ``h``, ``cell``: ``h_{t-1}`` and its LSTM cell (zeros before the first step); ``context``: ``c_{t-1}``, the
    previous step's (real or imagined) context, which the prior conditions on (zeros before the first step).
    """

    h: torch.Tensor
    cell: torch.Tensor
    context: torch.Tensor


@dataclass
class StepState:
    """The model's state at step t, after observing (posterior) or imagining (prior) frame ``x_t``.

    ``h``, ``cell``: ``h_{t-1}`` and its cell ``[B, H]``; ``z``: ``z_t`` ``[B, Z]``; ``context``: ``c_t`` ``[B, D]``
    (perceived, or the context head's ``ĉ_t`` when imagined). ``belief = [h_{t-1}, z_t]`` ``[B, H + Z]`` is what
    the frame and context heads read and what a policy can use as features.
    """

    h: torch.Tensor
    cell: torch.Tensor
    z: torch.Tensor
    context: torch.Tensor

    @property
    def belief(self) -> torch.Tensor:
        """``[h_{t-1}, z_t]``, ``[B, H + Z]``."""
        return torch.cat([self.h, self.z], dim=-1)

    def index(self, rows: torch.Tensor | slice | int) -> StepState:
        """The state of the selected batch rows."""
        return StepState(*(x[rows] for x in _fields(self)))


def _fields(state: Any) -> list[torch.Tensor]:
    return [getattr(state, f.name) for f in dataclasses.fields(state)]


@dataclass
class MixturePrior:
    """Parameters of ``p(z_t | h_{t-1}, c_{t-1})`` for a batch ``[...]``.

    ``stick_a``, ``stick_b``: Kumaraswamy parameters of the sticks ``[..., K-1]``; ``mu``, ``log_sigma``: the
    components ``[..., K, Z]``.
    """

    stick_a: torch.Tensor
    stick_b: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor

    def mean_weights_log(self) -> torch.Tensor:
        """``log pi`` from the sticks' means ``E[v]``, ``[..., K]``."""
        return stick_breaking_log_weights(kumaraswamy_mean(self.stick_a, self.stick_b))

    def sample_weights_log(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``log pi`` from reparameterised sticks ``v ~ Kumaraswamy(a, b)``, ``[..., K]``."""
        return stick_breaking_log_weights(sample_kumaraswamy(self.stick_a, self.stick_b, generator=generator))


def _gaussian_sample(
    mu: torch.Tensor, log_sigma: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Reparameterised ``mu + sigma * eps``, ``eps ~ N(0, I)``."""
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + log_sigma.exp() * noise
