"""World model: stick-breaking / DPGMM prior maths (the VRNN itself is not built yet)."""

from .mixture import (
    active_components,
    balanced_kl,
    free_nats_kl,
    gaussian_kl,
    gaussian_mixture_kl_mc,
    mixture_log_prob,
)
from .stick_breaking import (
    DPConcentration,
    gamma_kl,
    kumaraswamy_beta_kl,
    kumaraswamy_mean,
    sample_kumaraswamy,
    stick_breaking_weights,
)

__all__ = [
    "DPConcentration",
    "active_components",
    "balanced_kl",
    "free_nats_kl",
    "gamma_kl",
    "gaussian_kl",
    "gaussian_mixture_kl_mc",
    "kumaraswamy_beta_kl",
    "kumaraswamy_mean",
    "mixture_log_prob",
    "sample_kumaraswamy",
    "stick_breaking_weights",
]
