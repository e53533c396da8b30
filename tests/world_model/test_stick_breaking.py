"""Stick-breaking weights, the Kumaraswamy sampler and KL(Kumaraswamy || Beta), Gamma KL and DPConcentration."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, special

from aime_rl.world_model import stick_breaking
from aime_rl.world_model.stick_breaking import (
    DPConcentration,
    gamma_kl,
    kumaraswamy_beta_kl,
    kumaraswamy_expected_log,
    kumaraswamy_expected_log1m,
    kumaraswamy_log_prob,
    kumaraswamy_mean,
    sample_kumaraswamy,
    stick_breaking_log_weights,
    stick_breaking_weights,
)

F64 = torch.float64
GRID_AB = [0.3, 0.5, 1.0, 2.0, 5.0, 10.0]
GRID_ALPHA0 = [0.3, 1.0, 3.0, 10.0]
# The tolerance: within 1% relative or 1e-3 absolute of the quadrature reference.
REL_TOL, ABS_TOL = 1e-2, 1e-3


def t64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


# ----------------------------------------------------------------------------------------------- references


def kl_reference(a: float, b: float, alpha: float, beta: float) -> float:
    """KL(Kuma(a, b) || Beta(alpha, beta)) = int_0^1 q (log q - log p) dv by scipy quad, in float64.

    Split at 1/2; the upper half is integrated in s = 1 - v so log(1 - v) and 1 - v^a stay exact near v = 1.
    QAGS extrapolation handles the integrable endpoint singularities (v^(a-1), (1 - v^a)^(b-1), logs).
    """
    log_beta_fn = special.betaln(alpha, beta)

    def integrand(log_v: float, log1m_v: float) -> float:
        log1m_v_pow_a = math.log(-math.expm1(a * log_v))
        log_q = math.log(a * b) + (a - 1) * log_v + (b - 1) * log1m_v_pow_a
        log_p = (alpha - 1) * log_v + (beta - 1) * log1m_v - log_beta_fn
        return math.exp(log_q) * (log_q - log_p)

    options = dict(limit=500, epsabs=1e-12, epsrel=1e-10)
    with warnings.catch_warnings():
        # QAGS sometimes reports roundoff before reaching 1e-10; its answers still agree with 30-digit mpmath
        # to ~1e-8 relative on this grid, far inside the tolerances asserted below.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        lower, _ = integrate.quad(lambda v: integrand(math.log(v), math.log1p(-v)), 0.0, 0.5, **options)
        upper, _ = integrate.quad(lambda s: integrand(math.log1p(-s), math.log(s)), 0.0, 0.5, **options)
    return lower + upper


def kl_truncated_series(a: float, b: float, alpha: float, beta: float, num_terms: int = 10) -> float:
    """The original implementation: Nalisnick & Smyth's closed form with the series cut at ``num_terms``."""
    m = np.arange(1, num_terms + 1, dtype=np.float64)
    series = b * np.sum(np.exp(special.betaln(m / a, b)) / (m + a * b))
    return float(
        (a - alpha) / a * (-np.euler_gamma - special.digamma(b) - 1 / b)
        + np.log(a * b)
        + special.betaln(alpha, beta)
        - (b - 1) / b
        + (beta - 1) * series
    )


def within_tolerance(value: float, reference: float) -> bool:
    return abs(value - reference) <= max(REL_TOL * abs(reference), ABS_TOL)


@pytest.fixture(scope="module")
def kl_grid() -> list[tuple[float, float, float, float]]:
    """(a, b, alpha0, reference KL) on the issue's grid, prior Beta(1, alpha0)."""
    return [
        (a, b, alpha0, kl_reference(a, b, 1.0, alpha0))
        for a, b, alpha0 in itertools.product(GRID_AB, GRID_AB, GRID_ALPHA0)
    ]


# ------------------------------------------------------------------------------------------- stick breaking


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_weights_are_a_distribution(dtype):
    gen = torch.Generator().manual_seed(0)
    v = torch.rand(4, 6, 9, generator=gen, dtype=dtype)
    v[0, 0] = torch.tensor([0.0, 1.0, 1e-12, 1 - 1e-12, 0.5, 1.0, 1.0, 0.0, 1e-30], dtype=dtype)
    v[0, 1] = 1.0 - 1e-9  # every stick almost fully broken
    pi = stick_breaking_weights(v)
    assert pi.shape == (4, 6, 10) and pi.dtype == dtype
    assert torch.isfinite(pi).all() and (pi >= 0).all()
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(pi.sum(-1), torch.ones(4, 6, dtype=dtype), atol=atol, rtol=0)
    torch.testing.assert_close(stick_breaking_log_weights(v).exp(), pi)


def test_weights_by_hand():
    torch.testing.assert_close(stick_breaking_weights(t64([0.3])), t64([0.3, 0.7]))
    torch.testing.assert_close(stick_breaking_weights(t64([0.5, 0.2])), t64([0.5, 0.1, 0.4]))
    torch.testing.assert_close(stick_breaking_weights(t64([[0.3], [0.9]])), t64([[0.3, 0.7], [0.9, 0.1]]))


def test_weights_gradients_are_finite():
    v = torch.tensor([1e-9, 0.5, 1 - 1e-9, 0.2], dtype=F64, requires_grad=True)
    (stick_breaking_weights(v) * t64([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("bad", [torch.tensor(0.5), torch.zeros(3, 0)])
def test_weights_bad_shape_raises(bad):
    with pytest.raises(ValueError, match=r"\bv\b.*shape"):
        stick_breaking_weights(bad)


# ---------------------------------------------------------------------------------------------- Kumaraswamy


@pytest.mark.parametrize("a, b", [(0.3, 0.3), (0.5, 5.0), (1.0, 1.0), (2.0, 5.0), (10.0, 0.5), (5.0, 10.0)])
def test_sampler_mean_matches_kumaraswamy_mean(a, b):
    gen = torch.Generator().manual_seed(1)
    v = sample_kumaraswamy(t64(a), t64(b), generator=gen, sample_shape=(200_000,))
    assert v.shape == (200_000,)
    assert ((v > 0) & (v < 1)).all()
    standard_error = v.std() / math.sqrt(v.numel())
    assert abs(v.mean() - kumaraswamy_mean(t64(a), t64(b))) < 5 * standard_error


def test_kumaraswamy_mean_special_cases():
    x = t64([0.05, 0.3, 1.0, 7.0, 100.0])
    torch.testing.assert_close(kumaraswamy_mean(torch.ones_like(x), x), 1 / (1 + x))  # Beta(1, b)
    torch.testing.assert_close(kumaraswamy_mean(x, torch.ones_like(x)), x / (x + 1))  # Beta(a, 1)


def test_kumaraswamy_log_prob_integrates_to_one():
    for a, b in [(0.5, 0.5), (2.0, 5.0), (10.0, 0.3)]:
        total, _ = integrate.quad(
            lambda v, a=a, b=b: kumaraswamy_log_prob(t64(v), t64(a), t64(b)).exp().item(), 0, 1, limit=200
        )
        assert abs(total - 1) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sampler_is_in_unit_interval_with_finite_gradients_on_extreme_parameters(dtype):
    values = [0.05, 0.3, 1.0, 10.0, 100.0]
    a_grid, b_grid = torch.meshgrid(
        torch.tensor(values, dtype=dtype), torch.tensor(values, dtype=dtype), indexing="ij"
    )
    a = a_grid.clone().requires_grad_()
    b = b_grid.clone().requires_grad_()
    v = sample_kumaraswamy(a, b, generator=torch.Generator().manual_seed(2), sample_shape=(2000,))
    assert v.shape == (2000, 5, 5) and v.dtype == dtype
    assert ((v > 0) & (v < 1)).all()
    (v.log().sum() + torch.log1p(-v).sum()).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_sampler_generator_reproducible():
    a, b = torch.full((3,), 0.7), torch.full((3,), 2.0)
    first = sample_kumaraswamy(a, b, generator=torch.Generator().manual_seed(3))
    second = sample_kumaraswamy(a, b, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_expected_logs_on_closed_form_cases():
    """Kuma(1, b) = Beta(1, b) and Kuma(a, 1) = Beta(a, 1): E[log(1 - v)] = psi(beta) - psi(alpha + beta)."""
    x = t64([0.05, 0.1, 0.3, 1.0, 2.5, 10.0, 100.0])
    one = torch.ones_like(x)
    torch.testing.assert_close(kumaraswamy_expected_log1m(one, x), -1 / x, rtol=1e-8, atol=0)
    torch.testing.assert_close(
        kumaraswamy_expected_log1m(x, one), torch.digamma(one) - torch.digamma(x + 1), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(kumaraswamy_expected_log(one, x), torch.digamma(one) - torch.digamma(x + 1))


def test_expected_log1m_matches_monte_carlo_on_extreme_parameters():
    """Independent numpy Monte Carlo of log(1 - v) via the inverse CDF, in log space (v itself rounds to 1)."""

    def log1mexp(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.where(t > -math.log(2), np.log(-np.expm1(t)), np.log1p(-np.exp(t)))

    log_w = np.log1p(-np.random.default_rng(4).random(200_000))  # w = 1 - u ~ U(0, 1], log w <= 0
    for a, b in itertools.product([0.05, 0.3, 3.0, 100.0], repeat=2):
        log1m_v = log1mexp(log1mexp(np.minimum(log_w / b, -1e-300)) / a)
        standard_error = log1m_v.std() / math.sqrt(log1m_v.size)
        expected = kumaraswamy_expected_log1m(t64(a), t64(b)).item()
        assert abs(expected - log1m_v.mean()) < 5 * standard_error + 1e-12, (a, b)


# ---------------------------------------------------------------------------------------------- KL accuracy


def test_kl_matches_quadrature_on_grid(kl_grid):
    a, b, alpha0, reference = (t64(column) for column in zip(*kl_grid, strict=True))
    kl = kumaraswamy_beta_kl(a, b, 1.0, alpha0)
    error = (kl - reference).abs()
    assert (error <= torch.maximum(REL_TOL * reference.abs(), torch.full_like(reference, ABS_TOL))).all()
    # Far tighter in fact: ~1e-10 against mpmath; the scipy reference itself is good to ~1e-8 here.
    assert (error <= 1e-6 * reference.abs().clamp_min(1e-2)).all(), error.max()


def test_ten_term_series_violates_the_tolerance(kl_grid):
    """The grid is discriminative: the original 10-term truncation fails it (by far, for small a)."""
    failures = [
        (a, b, alpha0, reference, kl_truncated_series(a, b, 1.0, alpha0))
        for a, b, alpha0, reference in kl_grid
        if not within_tolerance(kl_truncated_series(a, b, 1.0, alpha0), reference)
    ]
    assert failures, "a 10-term truncation should violate the tolerance somewhere on the grid"
    worst_relative = max(abs(trunc - ref) / abs(ref) for *_, ref, trunc in failures)
    assert worst_relative > 0.2
    # ...while many terms converge to the reference, which validates the series form as written.
    a, b, alpha0, reference = 2.0, 2.0, 3.0, kl_reference(2.0, 2.0, 1.0, 3.0)
    assert abs(kl_truncated_series(a, b, 1.0, alpha0, num_terms=200_000) - reference) < 1e-4


@pytest.mark.parametrize("prior_alpha", [0.5, 2.0, 4.0])
def test_kl_matches_quadrature_for_general_beta_prior(prior_alpha):
    for a, b, prior_beta in itertools.product([0.3, 1.0, 5.0], [0.5, 2.0, 10.0], [0.3, 3.0]):
        reference = kl_reference(a, b, prior_alpha, prior_beta)
        kl = kumaraswamy_beta_kl(t64(a), t64(b), prior_alpha, prior_beta).item()
        assert abs(kl - reference) <= 1e-6 * max(abs(reference), 1e-2), (a, b, prior_beta, kl, reference)


def test_kl_float32_close_to_float64():
    values = torch.logspace(-1.3, 2, 25, dtype=F64)
    a, b, alpha0 = torch.meshgrid(values, values, t64([0.3, 1.0, 10.0]), indexing="ij")
    kl64 = kumaraswamy_beta_kl(a, b, 1.0, alpha0)
    kl32 = kumaraswamy_beta_kl(a.float(), b.float(), 1.0, alpha0.float())
    assert kl32.dtype == torch.float32
    assert ((kl32.double() - kl64).abs() <= 1e-3 * kl64.abs().clamp_min(1e-2)).all()


def test_kl_is_nonnegative():
    gen = torch.Generator().manual_seed(5)
    a, b, prior_alpha, prior_beta = torch.exp(
        torch.empty(4, 2000, dtype=F64).uniform_(-3, 4.6, generator=gen)
    )
    assert (kumaraswamy_beta_kl(a, b, prior_alpha, prior_beta) >= -1e-10).all()


def test_kl_is_zero_for_identical_distributions():
    """Kumaraswamy(1, b) has density b (1 - v)^(b - 1): it is Beta(1, b)."""
    b = t64([0.05, 0.3, 1.0, 3.0, 10.0, 100.0])
    torch.testing.assert_close(
        kumaraswamy_beta_kl(torch.ones_like(b), b, 1.0, b), torch.zeros_like(b), atol=1e-10, rtol=0
    )
    kl32 = kumaraswamy_beta_kl(torch.ones_like(b).float(), b.float(), 1.0, b.float())
    assert (kl32.abs() < 1e-5).all()


def test_kl_broadcasts_and_accepts_floats():
    a = torch.full((3, 1), 0.8)
    b = torch.full((1, 4), 2.0)
    assert kumaraswamy_beta_kl(a, b, 1.0, torch.ones(4)).shape == (3, 4)
    assert kumaraswamy_beta_kl(0.8, 2, 1, 3).shape == ()
    half = kumaraswamy_beta_kl(a.half(), b.half(), 1.0, 3.0)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_kl_first_called_in_inference_mode_still_trains():
    stick_breaking._tanh_sinh_nodes.cache_clear()  # the quadrature nodes are cached on first use
    with torch.inference_mode():
        kumaraswamy_beta_kl(torch.ones(2), torch.ones(2), 1.0, 3.0)
    a = torch.ones(2, requires_grad=True)
    kumaraswamy_beta_kl(a, torch.ones(2), 1.0, 3.0).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_kl_gradients():
    points = [(0.3, 0.5, 1.0, 0.3), (2.0, 5.0, 1.0, 3.0), (10.0, 0.3, 2.0, 10.0), (0.5, 10.0, 0.5, 1.5)]
    params = tuple(t64(column).requires_grad_() for column in zip(*points, strict=True))
    assert torch.autograd.gradcheck(kumaraswamy_beta_kl, params)
    # float32, extreme parameters: finite.
    values = torch.tensor([0.05, 0.3, 1.0, 10.0, 100.0])
    a, b = (x.clone().requires_grad_() for x in torch.meshgrid(values, values, indexing="ij"))
    prior_beta = torch.tensor(3.0, requires_grad=True)
    kumaraswamy_beta_kl(a, b, 1.0, prior_beta).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (a, b, prior_beta))


# ------------------------------------------------------------------------------------------ DP concentration


def test_gamma_kl_matches_torch():
    gen = torch.Generator().manual_seed(6)
    k_q, r_q, k_p, r_p = torch.exp(torch.empty(4, 100, dtype=F64).uniform_(-2, 3, generator=gen))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Gamma(k_q, r_q), torch.distributions.Gamma(k_p, r_p)
    )
    torch.testing.assert_close(gamma_kl(k_q, r_q, k_p, r_p), expected)
    torch.testing.assert_close(gamma_kl(k_q, r_q, k_q, r_q), torch.zeros_like(k_q))


def test_dp_concentration():
    default = DPConcentration()
    assert abs(default.kl().item()) < 1e-6  # posterior starts at the Gamma(1, 1) prior
    module = DPConcentration(prior_shape=2.0, prior_rate=0.5, init=3.0, init_shape=5.0)
    assert math.isclose(module.mean.item(), 3.0, rel_tol=1e-5)
    assert math.isclose(module.shape.item(), 5.0, rel_tol=1e-5)
    torch.manual_seed(7)
    alpha0 = module.sample((4, 7))
    assert alpha0.shape == (4, 7) and (alpha0 > 0).all()
    expected_kl = gamma_kl(module.shape, module.rate, 2.0, 0.5)
    torch.testing.assert_close(module.kl(), expected_kl)
    loss = (
        kumaraswamy_beta_kl(torch.full((4, 7), 0.9), torch.full((4, 7), 2.0), 1.0, alpha0).mean()
        + module.kl()
    )
    loss.backward()
    assert all(torch.isfinite(p.grad) and p.grad != 0 for p in module.parameters())
    assert set(module.state_dict()) == {"prior_shape", "prior_rate", "raw_shape", "raw_rate"}
    with pytest.raises(ValueError, match="init"):
        DPConcentration(init=0.0)
