"""Gaussian mixture log-density, Monte-Carlo KL to a mixture, active components, free nats and KL balancing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from aime_rl.world_model.mixture import (
    active_components,
    balanced_kl,
    free_nats_kl,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_mixture_kl_mc,
    mixture_log_prob,
)
from aime_rl.world_model.stick_breaking import kumaraswamy_beta_kl

F64 = torch.float64


def randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def torch_mixture(log_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(D.Categorical(logits=log_pi), D.Independent(D.Normal(mu, log_sigma.exp()), 1))


def test_gaussian_kl_matches_torch():
    q_mu, q_log_sigma, p_mu, p_log_sigma = randn(4, 3, 5, 6, seed=0).unbind(0)
    expected = D.kl_divergence(D.Normal(q_mu, q_log_sigma.exp()), D.Normal(p_mu, p_log_sigma.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(q_mu, q_log_sigma, p_mu, p_log_sigma), expected)
    torch.testing.assert_close(
        gaussian_log_prob(q_mu, p_mu, p_log_sigma), D.Normal(p_mu, p_log_sigma.exp()).log_prob(q_mu).sum(-1)
    )


def test_mixture_log_prob_matches_mixture_same_family():
    batch, num_components, dim = (2, 3), 5, 4
    log_pi = randn(*batch, num_components, seed=1)
    mu = 2 * randn(*batch, num_components, dim, seed=2)
    log_sigma = 0.5 * randn(*batch, num_components, dim, seed=3)
    z = randn(7, *batch, dim, seed=4)  # extra sample dim broadcasts against the mixture's batch dims
    expected = torch_mixture(log_pi, mu, log_sigma).log_prob(z)
    assert mixture_log_prob(z, log_pi, mu, log_sigma).shape == (7, *batch)
    torch.testing.assert_close(mixture_log_prob(z, log_pi, mu, log_sigma), expected)
    # Logits and normalised log-weights give the same density; an empty component (-inf) is allowed.
    torch.testing.assert_close(mixture_log_prob(z, torch.log_softmax(log_pi, -1), mu, log_sigma), expected)
    log_pi_empty = log_pi.clone()
    log_pi_empty[..., 0] = -math.inf
    expected_empty = torch_mixture(log_pi_empty[..., 1:], mu[..., 1:, :], log_sigma[..., 1:, :]).log_prob(z)
    torch.testing.assert_close(mixture_log_prob(z, log_pi_empty, mu, log_sigma), expected_empty)


@pytest.mark.parametrize(
    "name, shapes",
    [
        ("z", [(3, 6), (3, 4), (3, 4, 5), (3, 4, 5)]),
        ("log_pi", [(3, 5), (3, 2), (3, 4, 5), (3, 4, 5)]),
        ("log_sigma", [(3, 5), (3, 4), (3, 4, 5), (3, 4, 6)]),
        ("mu", [(3, 5), (3, 4), (5,), (5,)]),
    ],
)
def test_mixture_log_prob_bad_shapes_raise(name, shapes):
    with pytest.raises(ValueError, match=rf"\b{name}\b.*shape"):
        mixture_log_prob(*(torch.zeros(shape) for shape in shapes))


def test_mc_kl_is_unbiased_for_a_single_component():
    """K = 1: the mean of many one-sample estimates equals the closed-form Gaussian KL within 4 standard errors."""
    dim, num_estimates = 3, 200_000
    q_mu, q_log_sigma = randn(dim, seed=5), 0.3 * randn(dim, seed=6)
    p_mu, p_log_sigma = randn(dim, seed=7), 0.3 * randn(dim, seed=8)
    estimates = gaussian_mixture_kl_mc(
        q_mu.expand(num_estimates, dim),
        q_log_sigma,
        torch.zeros(1, dtype=F64),
        p_mu[None],
        p_log_sigma[None],
        generator=torch.Generator().manual_seed(9),
    )
    assert estimates.shape == (num_estimates,)
    standard_error = estimates.std() / math.sqrt(num_estimates)
    exact = gaussian_kl(q_mu, q_log_sigma, p_mu, p_log_sigma)
    assert abs(estimates.mean() - exact) < 4 * standard_error
    # Averaging S samples inside the call is the same estimator.
    averaged = gaussian_mixture_kl_mc(
        q_mu, q_log_sigma, torch.zeros(1, dtype=F64), p_mu[None], p_log_sigma[None], num_samples=num_estimates
    )
    assert abs(averaged - exact) < 4 * standard_error


def test_mc_kl_is_exactly_zero_when_prior_equals_posterior():
    q_mu, q_log_sigma = randn(2, 8, 4, seed=10).unbind(0)
    estimate = gaussian_mixture_kl_mc(
        q_mu, q_log_sigma, torch.zeros(8, 1, dtype=F64), q_mu[:, None], q_log_sigma[:, None]
    )
    torch.testing.assert_close(estimate, torch.zeros(8, dtype=F64), atol=1e-12, rtol=0)


def test_mc_kl_for_a_mixture():
    """Jensen: KL(q || sum_k pi_k p_k) <= sum_k pi_k KL(q || p_k); with far-apart components and q on component j,
    KL(q || mixture) ~= KL(q || p_j) - log pi_j."""
    dim = 2
    log_pi = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=F64))
    mu = torch.tensor([[-30.0, 0.0], [0.0, 0.0], [30.0, 5.0]], dtype=F64)
    log_sigma = torch.log(torch.tensor([[1.0, 2.0], [0.5, 1.0], [1.5, 1.0]], dtype=F64))
    q_mu, q_log_sigma = torch.tensor([0.3, -0.2], dtype=F64), torch.log(torch.tensor([0.4, 0.7], dtype=F64))
    estimate = gaussian_mixture_kl_mc(
        q_mu,
        q_log_sigma,
        log_pi,
        mu,
        log_sigma,
        num_samples=100_000,
        generator=torch.Generator().manual_seed(11),
    )
    component_kls = gaussian_kl(q_mu, q_log_sigma, mu, log_sigma)
    assert estimate <= (log_pi.exp() * component_kls).sum()
    torch.testing.assert_close(estimate, component_kls[1] - log_pi[1], atol=1e-2, rtol=0)
    assert component_kls.shape == (3,) and mu.shape[-1] == dim


def test_mc_kl_shapes_gradients_and_generator():
    batch, time, num_components, dim = 4, 6, 5, 3
    q_mu = randn(batch, time, dim, seed=12).requires_grad_()
    q_log_sigma = (0.1 * randn(batch, time, dim, seed=13)).requires_grad_()
    log_pi = randn(num_components, seed=14).requires_grad_()  # a global prior, broadcast over [B, T]
    mu = randn(num_components, dim, seed=15).requires_grad_()
    log_sigma = (0.1 * randn(num_components, dim, seed=16)).requires_grad_()
    params = (q_mu, q_log_sigma, log_pi, mu, log_sigma)
    kl = gaussian_mixture_kl_mc(*params, num_samples=3, generator=torch.Generator().manual_seed(17))
    assert kl.shape == (batch, time)
    kl.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in params)
    again = gaussian_mixture_kl_mc(*params, num_samples=3, generator=torch.Generator().manual_seed(17))
    torch.testing.assert_close(kl, again, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_samples"):
        gaussian_mixture_kl_mc(*params, num_samples=0)
    with pytest.raises(ValueError, match="q_log_sigma"):
        gaussian_mixture_kl_mc(q_mu, q_log_sigma[..., :2], log_pi, mu, log_sigma)


def test_active_components():
    pi = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.97, 0.005, 0.005, 0.02], [0.25, 0.25, 0.25, 0.25]])
    count = active_components(pi)
    assert count.shape == () and count.dtype == torch.float32
    assert count.item() == pytest.approx((2 + 2 + 4) / 3)
    assert active_components(pi, eps=0.3).item() == pytest.approx((2 + 1 + 0) / 3)
    assert active_components(pi[0]).item() == 2.0
    with pytest.raises(ValueError, match="pi"):
        active_components(torch.tensor(1.0))


def test_free_nats():
    kl = torch.tensor([[0.2, 1.0, 3.0], [0.0, 0.99, 1.01]], requires_grad=True)
    clamped = free_nats_kl(kl, 1.0)
    torch.testing.assert_close(clamped, torch.tensor([[1.0, 1.0, 3.0], [1.0, 1.0, 1.01]]))
    clamped.sum().backward()
    assert kl.grad[0, 0] == 0 and kl.grad[1, 1] == 0 and kl.grad[0, 2] == 1 and kl.grad[1, 2] == 1
    torch.testing.assert_close(free_nats_kl(kl, 0.0), kl)


def _grads(loss: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("alpha", [0.8, 0.5, 0.0, 1.0])
def test_balanced_kl_gradients_gaussian(alpha):
    post = tuple(randn(5, 3, seed=s).requires_grad_() for s in (20, 21))
    prior = tuple(randn(5, 3, seed=s).requires_grad_() for s in (22, 23))
    plain = gaussian_kl(*post, *prior).sum()
    balanced = balanced_kl(gaussian_kl, post, prior, alpha=alpha).sum()
    torch.testing.assert_close(balanced, plain)
    plain_grads = _grads(plain, post + prior)
    balanced_grads = _grads(balanced, post + prior)
    for g_plain, g_balanced in zip(plain_grads[:2], balanced_grads[:2], strict=True):
        torch.testing.assert_close(g_balanced, (1 - alpha) * g_plain)
    for g_plain, g_balanced in zip(plain_grads[2:], balanced_grads[2:], strict=True):
        torch.testing.assert_close(g_balanced, alpha * g_plain)


def test_balanced_kl_gradients_kumaraswamy():
    a, b = (torch.tensor([0.5, 2.0, 7.0], dtype=F64, requires_grad=True) for _ in range(2))
    prior_alpha = torch.tensor(1.0, dtype=F64)
    prior_beta = torch.tensor(3.0, dtype=F64, requires_grad=True)
    plain = kumaraswamy_beta_kl(a, b, prior_alpha, prior_beta).sum()
    balanced = balanced_kl(kumaraswamy_beta_kl, (a, b), (prior_alpha, prior_beta), alpha=0.8).sum()
    torch.testing.assert_close(balanced, plain)
    (ga, gb, gbeta), (ba, bb, bbeta) = _grads(plain, (a, b, prior_beta)), _grads(balanced, (a, b, prior_beta))
    torch.testing.assert_close(ba, 0.2 * ga)
    torch.testing.assert_close(bb, 0.2 * gb)
    torch.testing.assert_close(bbeta, 0.8 * gbeta)


def test_balanced_kl_accepts_single_tensors_and_checks_alpha():
    post = torch.tensor([1.0, 2.0], requires_grad=True)
    prior = torch.tensor([0.5, 1.0], requires_grad=True)

    def squared_distance(x, y):
        return (x - y).square().sum()

    balanced = balanced_kl(squared_distance, post, prior, alpha=0.75)
    g_post, g_prior = torch.autograd.grad(balanced, (post, prior))
    torch.testing.assert_close(g_post, 0.25 * 2 * (post - prior).detach())
    torch.testing.assert_close(g_prior, -0.75 * 2 * (post - prior).detach())
    with pytest.raises(ValueError, match="alpha"):
        balanced_kl(squared_distance, post, prior, alpha=1.5)
