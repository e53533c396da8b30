"""Diagonal Gaussian mixture prior utilities: log-density, Monte-Carlo KL, and DreamerV3-style KL shaping.

Shapes: latents ``z [..., D]``; mixture log-weights ``log_pi [..., K]``; component means and log standard
deviations ``mu, log_sigma [..., K, D]``. Leading dims broadcast against each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "active_components",
    "balanced_kl",
    "free_nats_kl",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_mixture_kl_mc",
    "mixture_log_prob",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_mixture_shapes(
    z: torch.Tensor, log_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor
) -> None:
    if mu.dim() < 2:
        raise ValueError(f"mu must have shape [..., K, D], got shape {tuple(mu.shape)}")
    num_components, dim = mu.shape[-2:]
    if log_sigma.dim() < 2 or log_sigma.shape[-2:] != mu.shape[-2:]:
        raise ValueError(
            f"log_sigma must have shape [..., K={num_components}, D={dim}] like mu, got shape {tuple(log_sigma.shape)}"
        )
    if log_pi.dim() < 1 or log_pi.shape[-1] != num_components:
        raise ValueError(f"log_pi must have shape [..., K={num_components}], got shape {tuple(log_pi.shape)}")
    if z.dim() < 1 or z.shape[-1] != dim:
        raise ValueError(f"z must have shape [..., D={dim}], got shape {tuple(z.shape)}")


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over the last dim: ``[..., D] -> [...]`` (broadcasting).

    ``log N(z; mu, sigma^2) = sum_d [-(z_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi) / 2]``
    """
    standardized = (z - mu) * torch.exp(-log_sigma)
    return (-0.5 * standardized.square() - log_sigma - _HALF_LOG_2PI).sum(-1)


def mixture_log_prob(
    z: torch.Tensor, log_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor
) -> torch.Tensor:
    """Log-density of a diagonal Gaussian mixture: ``log sum_k pi_k N(z; mu_k, diag(sigma_k^2))``.

    Args:
        z: ``[..., D]`` points.
        log_pi: ``[..., K]`` mixture logits or log-weights; normalised here with ``log_softmax`` (a no-op for
            log-weights that already sum to one; ``-inf`` entries are allowed for empty components).
        mu: ``[..., K, D]`` component means.
        log_sigma: ``[..., K, D]`` component log standard deviations.

    Returns:
        ``[...]`` (the broadcast of the leading dims), via ``logsumexp`` over components.
    """
    _check_mixture_shapes(z, log_pi, mu, log_sigma)
    component_log_prob = gaussian_log_prob(z.unsqueeze(-2), mu, log_sigma)  # [..., K]
    return torch.logsumexp(torch.log_softmax(log_pi, dim=-1) + component_log_prob, dim=-1)


def gaussian_kl(
    q_mu: torch.Tensor, q_log_sigma: torch.Tensor, p_mu: torch.Tensor, p_log_sigma: torch.Tensor
) -> torch.Tensor:
    """Closed-form ``KL(N(q_mu, q_sigma^2) || N(p_mu, p_sigma^2))`` of diagonal Gaussians, summed over ``D``.

    ``sum_d [log(p_sigma / q_sigma) + (q_sigma^2 + (q_mu - p_mu)^2) / (2 p_sigma^2) - 1/2]``;
    inputs ``[..., D]`` (broadcasting), output ``[...]``.
    """
    variance_ratio = torch.exp(2.0 * (q_log_sigma - p_log_sigma))
    mean_term = ((q_mu - p_mu) * torch.exp(-p_log_sigma)).square()
    return (p_log_sigma - q_log_sigma + 0.5 * (variance_ratio + mean_term) - 0.5).sum(-1)


def gaussian_mixture_kl_mc(
    q_mu: torch.Tensor,
    q_log_sigma: torch.Tensor,
    log_pi: torch.Tensor,
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unbiased Monte-Carlo ``KL(q || p)`` from a diagonal Gaussian ``q`` to a Gaussian mixture ``p``.

    ``KL ~= (1/S) sum_s [log q(z_s) - log p(z_s)]`` with reparameterised ``z_s = q_mu + q_sigma * eps_s``,
    ``eps_s ~ N(0, I)``. Using the sampled ``log q(z_s)`` rather than the analytic entropy keeps the estimator
    unbiased and makes it a control variate: the estimate is exactly 0 when ``p = q``. Gradients flow to all
    parameters (pathwise).

    Args:
        q_mu, q_log_sigma: ``[..., D]`` posterior.
        log_pi: ``[..., K]`` mixture logits/log-weights (see :func:`mixture_log_prob`).
        mu, log_sigma: ``[..., K, D]`` mixture components.
        num_samples: ``S >= 1``.
        generator: optional ``torch.Generator`` for the noise (on ``q_mu``'s device).

    Returns:
        ``[...]``: the broadcast of the leading dims of all inputs.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if q_log_sigma.shape[-1:] != q_mu.shape[-1:]:
        raise ValueError(
            f"q_log_sigma must have shape [..., D={q_mu.shape[-1]}] like q_mu, got shape {tuple(q_log_sigma.shape)}"
        )
    _check_mixture_shapes(q_mu, log_pi, mu, log_sigma)
    q_shape = torch.broadcast_shapes(q_mu.shape, q_log_sigma.shape)
    noise = torch.randn((num_samples, *q_shape), generator=generator, dtype=q_mu.dtype, device=q_mu.device)
    z = q_mu + torch.exp(q_log_sigma) * noise  # [S, ..., D]
    log_q = gaussian_log_prob(z, q_mu, q_log_sigma)
    log_p = mixture_log_prob(z, log_pi, mu, log_sigma)
    return (log_q - log_p).mean(0)


def active_components(pi: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Number of mixture components with weight ``pi_k > eps``, averaged over leading dims.

    Args:
        pi: ``[..., K]`` mixture weights.
    Returns:
        0-dim float tensor (no gradient).
    """
    if pi.dim() < 1:
        raise ValueError(f"pi must have shape [..., K], got shape {tuple(pi.shape)}")
    return (pi.detach() > eps).sum(-1).float().mean()


def free_nats_kl(kl: torch.Tensor, free_nats: float) -> torch.Tensor:
    """Free nats (DreamerV3's "free bits"): ``max(kl, free_nats)`` elementwise.

    Apply it to a KL that is already summed over latent dims, one value per batch element and time step
    (``[B, T]``), before averaging — as DreamerV3 does (free = 1 nat). Elements below the threshold then contribute
    a constant and no gradient, so the optimiser stops squeezing a KL that is already small and spends its effort
    on the reconstruction instead. ``free_nats = 0`` is a no-op for non-negative KLs.
    """
    return torch.clamp(kl, min=free_nats)


def balanced_kl(
    kl_fn: Callable[..., torch.Tensor],
    post: Sequence[torch.Tensor] | torch.Tensor,
    prior: Sequence[torch.Tensor] | torch.Tensor,
    alpha: float = 0.8,
) -> torch.Tensor:
    """KL balancing (DreamerV2/V3): ``alpha KL(sg(post) || prior) + (1 - alpha) KL(post || sg(prior))``.

    The value equals ``kl_fn(*post, *prior)``; the gradient reaching the prior parameters is ``alpha`` times the
    plain KL's and the one reaching the posterior parameters ``1 - alpha`` times it, so the prior is trained
    toward the posterior faster than the posterior is regularised toward the prior (``sg`` = ``detach``).

    Args:
        kl_fn: called as ``kl_fn(*post, *prior)``, e.g. :func:`gaussian_kl` with ``post = (q_mu, q_log_sigma)``,
            ``prior = (p_mu, p_log_sigma)``, or ``kumaraswamy_beta_kl`` with ``post = (a, b)``,
            ``prior = (prior_alpha, prior_beta)``. A stochastic ``kl_fn`` (:func:`gaussian_mixture_kl_mc`)
            draws independent noise in its two calls: unbiased, but then the gradient split holds in expectation.
        post, prior: tuples of tensors (a single tensor is taken as a 1-tuple).
        alpha: weight of the prior's learning signal, in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    post = (post,) if isinstance(post, torch.Tensor) else tuple(post)
    prior = (prior,) if isinstance(prior, torch.Tensor) else tuple(prior)
    train_prior = kl_fn(*(p.detach() for p in post), *prior)
    train_post = kl_fn(*post, *(p.detach() for p in prior))
    return alpha * train_prior + (1.0 - alpha) * train_post
