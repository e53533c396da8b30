"""Stick-breaking construction of Dirichlet-process mixture weights, with Kumaraswamy posteriors over the sticks.

A truncated Dirichlet process with concentration ``alpha0`` places ``K`` mixture weights ``pi`` by breaking a unit
stick: ``v_k ~ Beta(1, alpha0)`` for ``k < K`` and

    pi_k = v_k * prod_{j<k} (1 - v_j)        (k = 1 .. K-1)
    pi_K = prod_{j<K} (1 - v_j)               (the leftover stick)

The posterior over each stick is a Kumaraswamy(a, b) distribution (Nalisnick & Smyth, 2017): its density
``q(v) = a b v^(a-1) (1 - v^a)^(b-1)`` is close to a Beta, but it has a closed-form inverse CDF, so samples are
reparameterisable. The KL divergence to the Beta prior is closed form except for ``E_q[log(1 - v)]``, which we
compute by tanh-sinh quadrature (accurate to ~1e-5 relative for a, b in [0.05, 100], see
:func:`kumaraswamy_expected_log1m`) instead of the usual 10-term series, whose terms decay like ``m^-(1+b)``: cut at
10 terms it is off by more than 1% on much of a, b, alpha0 in [0.3, 10] (by 1 nat for Kuma(1, 0.3) vs Beta(1, 0.3)).

The concentration ``alpha0`` itself can be learned: :class:`DPConcentration` holds a Gamma posterior over it and
:func:`gamma_kl` gives the KL to a Gamma prior.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "STICK_EPS",
    "DPConcentration",
    "gamma_kl",
    "kumaraswamy_beta_kl",
    "kumaraswamy_expected_log",
    "kumaraswamy_expected_log1m",
    "kumaraswamy_log_prob",
    "kumaraswamy_mean",
    "sample_kumaraswamy",
    "stick_breaking_log_weights",
    "stick_breaking_weights",
]

#: Sticks are clamped to ``[STICK_EPS, 1 - STICK_EPS]`` before taking logs; 1e-6 is well above float32's
#: resolution near 1 (6e-8), so ``1 - STICK_EPS < 1`` holds in float32 and no log ever sees 0.
STICK_EPS = 1e-6

_EULER_GAMMA = 0.5772156649015329
_LOG_2 = math.log(2.0)

# Tanh-sinh (double-exponential) quadrature on w in (0, 1): w(t) = sigmoid(pi * sinh(t)), t = k * h. Nodes where w
# or 1 - w falls below 1e-30 are dropped (the integrands here are O(log w), so the dropped mass is ~1e-28).
# h = 0.2 gives 37 nodes and a relative error below 6e-6 on E_q[log(1 - v)] for a, b in [0.05, 100]
# (below 1e-10 for a, b in [0.3, 10]) against 30-digit mpmath quadrature.
_TANH_SINH_STEP = 0.2
_TANH_SINH_MIN_W = 1e-30
# Below log x = -20 the series log(1 - (1 - x)^(1/a)) = log(x / a) + (1 - 1/a) x / 2 + O(x^2 / a^2) is exact in
# float64, and it does not underflow when x does.
_SMALL_LOG_X = -20.0


def _check_last_dim(name: str, x: torch.Tensor, min_size: int, meaning: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [..., {meaning}], got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] < min_size:
        raise ValueError(
            f"{name} must have shape [..., {meaning}] with a last dim of size >= {min_size}, "
            f"got shape {tuple(x.shape)}"
        )


# --------------------------------------------------------------------------------------------- stick breaking


def stick_breaking_log_weights(v: torch.Tensor, eps: float = STICK_EPS) -> torch.Tensor:
    """Log mixture weights from stick proportions.

    Args:
        v: ``[..., K-1]`` stick proportions in (0, 1); clamped to ``[eps, 1 - eps]``.
        eps: clamp margin (see :data:`STICK_EPS`).

    Returns:
        ``[..., K]``: ``log pi_k = log v_k + sum_{j<k} log(1 - v_j)`` for ``k < K`` and
        ``log pi_K = sum_{j<K} log(1 - v_j)``, computed with a cumulative sum of ``log1p(-v)``.
    """
    _check_last_dim("v", v, 1, "K-1")
    v = v.clamp(eps, 1.0 - eps)
    log_rest = torch.log1p(-v)  # log of the stick left after each break
    log_remaining_before = torch.cumsum(log_rest, dim=-1) - log_rest  # sum_{j<k} log(1 - v_j)
    log_pi_head = torch.log(v) + log_remaining_before
    log_pi_last = log_rest.sum(dim=-1, keepdim=True)
    return torch.cat([log_pi_head, log_pi_last], dim=-1)


def stick_breaking_weights(v: torch.Tensor, eps: float = STICK_EPS) -> torch.Tensor:
    """Mixture weights ``pi [..., K]`` (non-negative, summing to 1) from sticks ``v [..., K-1]`` in (0, 1).

    ``pi_k = v_k prod_{j<k} (1 - v_j)`` and the last weight is the leftover stick ``prod_{j<K} (1 - v_j)``.
    Computed in log space (:func:`stick_breaking_log_weights`); ``v`` is clamped to ``[eps, 1 - eps]``.
    Raises ``ValueError`` naming ``v`` if it has no last dim or ``K - 1 < 1``.
    """
    return stick_breaking_log_weights(v, eps).exp()


# ------------------------------------------------------------------------------------------------ Kumaraswamy


def kumaraswamy_log_prob(v: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log q(v) = log a + log b + (a - 1) log v + (b - 1) log(1 - v^a)``, elementwise, broadcasting."""
    log_v = torch.log(v)
    return torch.log(a) + torch.log(b) + (a - 1) * log_v + (b - 1) * _log1mexp(a * log_v)


def sample_kumaraswamy(
    a: torch.Tensor,
    b: torch.Tensor,
    eps: float = STICK_EPS,
    generator: torch.Generator | None = None,
    sample_shape: torch.Size | tuple[int, ...] = (),
) -> torch.Tensor:
    """Reparameterised sample ``v ~ Kumaraswamy(a, b)`` of shape ``sample_shape + broadcast(a, b).shape``.

    Inverse CDF with ``u ~ U(eps, 1 - eps)``: ``v = (1 - (1 - u)^(1/b))^(1/a)``, evaluated in log space as
    ``log v = log(-expm1(log1p(-u) / b)) / a`` so it stays accurate (and its gradients finite) for a, b in
    [0.05, 100]. The value is clamped to ``[eps, 1 - eps]`` (so it can go to logs and to
    :func:`stick_breaking_weights` directly) with a straight-through clamp: gradients are those of the unclamped
    sample, so they do not vanish when extreme ``a, b`` push ``v`` against the clamp.
    """
    a = _as_float(a)
    a, b = torch.broadcast_tensors(a, _as_float(b, like=a))
    shape = torch.Size(sample_shape) + a.shape
    u = torch.rand(shape, generator=generator, dtype=a.dtype, device=a.device)
    u = eps + (1.0 - 2.0 * eps) * u
    log_one_minus_v_pow_a = torch.log1p(-u) / b  # log(1 - v^a) = log(1 - u) / b
    v = (_log1mexp(log_one_minus_v_pow_a) / a).exp()
    return v + (v.clamp(eps, 1.0 - eps) - v).detach()  # clamp the value, keep the exact gradient


def kumaraswamy_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``E[v] = b B(1 + 1/a, b)`` for ``v ~ Kumaraswamy(a, b)``, via ``lgamma``; elementwise, broadcasting."""
    return torch.exp(torch.log(b) + _log_beta_fn(1.0 + 1.0 / a, b))


def kumaraswamy_expected_log(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``E_q[log v] = -(gamma + psi(b) + 1/b) / a`` (exact; ``v^a ~ Beta(1, b)``), elementwise."""
    return -(_EULER_GAMMA + torch.digamma(b) + 1.0 / b) / a


def kumaraswamy_expected_log1m(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``E_q[log(1 - v)]`` for ``v ~ Kumaraswamy(a, b)``, elementwise, broadcasting, differentiable.

    With ``w = 1 - u ~ U(0, 1)`` the inverse CDF is ``v = (1 - x)^(1/a)``, ``x = w^(1/b)``, so

        E_q[log(1 - v)] = int_0^1 log(1 - (1 - w^(1/b))^(1/a)) dw.

    The integrand has a log singularity at ``w = 0`` and an algebraic one, ``-((1 - w) / b)^(1/a)``, at ``w = 1``;
    tanh-sinh quadrature handles both with 37 fixed nodes (relative error < 6e-6 for a, b in [0.05, 100]). Each
    node is evaluated in log space (``log w`` precomputed exactly in float64), so there is no cancellation near the
    ends. Cost: 37 elementwise evaluations per element, vectorised (``[..., 37]`` intermediates).
    Half-precision inputs are computed in float32 and cast back.
    """
    a = _as_float(a)
    a, b = torch.broadcast_tensors(a, _as_float(b, like=a))
    out_dtype = a.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    log_w, weights = _tanh_sinh_nodes(a.dtype, a.device)
    a, b = a.unsqueeze(-1), b.unsqueeze(-1)
    tiny = torch.finfo(a.dtype).tiny
    log_x = (log_w / b).clamp(max=-tiny)  # log(1 - v^a) < 0
    integrand = _log1m_kumaraswamy_inverse(log_x, a)
    return (integrand * weights).sum(-1).to(out_dtype)


def kumaraswamy_beta_kl(
    a: torch.Tensor,
    b: torch.Tensor,
    prior_alpha: torch.Tensor | float,
    prior_beta: torch.Tensor | float,
) -> torch.Tensor:
    """``KL(Kumaraswamy(a, b) || Beta(prior_alpha, prior_beta))``, elementwise, broadcasting, differentiable.

    With ``q(v) = a b v^(a-1) (1 - v^a)^(b-1)`` and ``E_q[log(1 - v^a)] = -1/b`` (``v^a ~ Beta(1, b)``):

        KL = log(a b) + (a - alpha) E_q[log v] - (b - 1)/b - (beta - 1) E_q[log(1 - v)] + log B(alpha, beta)

    where ``E_q[log v] = -(gamma + psi(b) + 1/b) / a`` (gamma: Euler's constant). This is Nalisnick & Smyth's
    closed form, whose series ``b sum_m B(m/a, b) / (m + a b) = -E_q[log(1 - v)]`` we evaluate by quadrature
    (:func:`kumaraswamy_expected_log1m`) rather than truncating it. All parameters must be positive (not
    checked, to avoid a device sync). Returns the broadcast shape of the four inputs; half-precision inputs are
    computed in float32. Roundoff can make it slightly negative (~1e-7 in float32) where the KL is 0.
    """
    a = _as_float(a)
    b, prior_alpha, prior_beta = (_as_float(x, like=a) for x in (b, prior_alpha, prior_beta))
    if a.dtype in (torch.float16, torch.bfloat16):
        return kumaraswamy_beta_kl(a.float(), b.float(), prior_alpha.float(), prior_beta.float()).to(a.dtype)
    expected_log_v = kumaraswamy_expected_log(a, b)
    expected_log1m_v = kumaraswamy_expected_log1m(a, b)
    return (
        torch.log(a)
        + torch.log(b)
        + (a - prior_alpha) * expected_log_v
        - (b - 1.0) / b
        - (prior_beta - 1.0) * expected_log1m_v
        + _log_beta_fn(prior_alpha, prior_beta)
    )


# --------------------------------------------------------------------------------------- DP concentration prior


def gamma_kl(
    post_shape: torch.Tensor,
    post_rate: torch.Tensor,
    prior_shape: torch.Tensor | float,
    prior_rate: torch.Tensor | float,
) -> torch.Tensor:
    """``KL(Gamma(k_q, r_q) || Gamma(k_p, r_p))`` (shape/rate parameterisation), elementwise, broadcasting:

    KL = (k_q - k_p) psi(k_q) - lgamma(k_q) + lgamma(k_p) + k_p (log r_q - log r_p) + k_q (r_p - r_q) / r_q
    """
    post_shape = _as_float(post_shape)
    post_rate, prior_shape, prior_rate = (
        _as_float(x, like=post_shape) for x in (post_rate, prior_shape, prior_rate)
    )
    return (
        (post_shape - prior_shape) * torch.digamma(post_shape)
        - torch.lgamma(post_shape)
        + torch.lgamma(prior_shape)
        + prior_shape * (torch.log(post_rate) - torch.log(prior_rate))
        + post_shape * (prior_rate - post_rate) / post_rate
    )


class DPConcentration(nn.Module):
    """Learned Gamma posterior ``q(alpha0) = Gamma(shape, rate)`` over the DP concentration ``alpha0``.

    The stick prior is ``Beta(1, alpha0)``; a larger ``alpha0`` spreads mass over more components. ``shape`` and
    ``rate`` are ``softplus`` of free parameters. At construction the posterior mean is ``init`` and its shape is
    ``init_shape``; with the defaults the posterior starts equal to the ``Gamma(1, 1)`` prior (KL = 0).

    Use ``alpha0 = module.sample()`` (reparameterised) as ``prior_beta`` of :func:`kumaraswamy_beta_kl`, and add
    ``module.kl()`` once per step to the loss (it is a global latent, not per-sample).
    """

    def __init__(
        self,
        prior_shape: float = 1.0,
        prior_rate: float = 1.0,
        init: float = 1.0,
        init_shape: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in [
            ("prior_shape", prior_shape),
            ("prior_rate", prior_rate),
            ("init", init),
            ("init_shape", init_shape),
        ]:
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.register_buffer("prior_shape", torch.tensor(float(prior_shape)))
        self.register_buffer("prior_rate", torch.tensor(float(prior_rate)))
        self.raw_shape = nn.Parameter(_inverse_softplus(torch.tensor(float(init_shape))))
        self.raw_rate = nn.Parameter(_inverse_softplus(torch.tensor(float(init_shape) / float(init))))

    @property
    def shape(self) -> torch.Tensor:
        """Posterior shape ``k_q > 0`` (0-dim)."""
        return F.softplus(self.raw_shape)

    @property
    def rate(self) -> torch.Tensor:
        """Posterior rate ``r_q > 0`` (0-dim)."""
        return F.softplus(self.raw_rate)

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean ``E_q[alpha0] = k_q / r_q`` (0-dim)."""
        return self.shape / self.rate

    def posterior(self) -> torch.distributions.Gamma:
        """``q(alpha0)`` as a ``torch.distributions.Gamma``."""
        return torch.distributions.Gamma(self.shape, self.rate)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterised ``alpha0 ~ q`` of shape ``sample_shape`` (``Gamma.rsample``)."""
        return self.posterior().rsample(torch.Size(sample_shape))

    def kl(self) -> torch.Tensor:
        """``KL(q(alpha0) || Gamma(prior_shape, prior_rate))`` (0-dim)."""
        return gamma_kl(self.shape, self.rate, self.prior_shape, self.prior_rate)

    def extra_repr(self) -> str:
        return f"prior_shape={self.prior_shape.item():g}, prior_rate={self.prior_rate.item():g}"


# ------------------------------------------------------------------------------------------------------ helpers


def _as_float(x: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as a floating tensor: on ``like``'s dtype/device when given, else the default float dtype for ints."""
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _log_beta_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log B(x, y) = lgamma(x) + lgamma(y) - lgamma(x + y)``."""
    return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)


def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(t))`` for ``t < 0``, accurate at both ends (Maechler 2012), with NaN-free gradients.

    Each branch gets an input clamped into its own range so the unused branch never produces inf/NaN that
    ``torch.where`` would turn into NaN gradients.
    """
    near_zero = t > -_LOG_2
    t_near = torch.where(near_zero, t, -_LOG_2)
    t_far = torch.where(near_zero, -_LOG_2, t)
    return torch.where(near_zero, torch.log(-torch.expm1(t_near)), torch.log1p(-torch.exp(t_far)))


def _log1m_kumaraswamy_inverse(log_x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``log(1 - (1 - x)^(1/a))`` from ``log x`` (``x = 1 - v^a``), stable for all ``x`` in (0, 1).

    For ``log x < -20`` uses ``log(x / a) + (1 - 1/a) x / 2`` (the next term is O(x^2 / a^2)), which does not
    underflow to ``log 0`` when ``x`` does.
    """
    small = log_x < _SMALL_LOG_X
    log_x_general = torch.where(small, _SMALL_LOG_X, log_x)
    log_v = _log1mexp(log_x_general) / a  # log v = log(1 - x) / a
    general = _log1mexp(log_v)
    asymptotic = log_x - torch.log(a) + (1.0 - 1.0 / a) * torch.exp(log_x) / 2.0
    return torch.where(small, asymptotic, general)


@functools.lru_cache(maxsize=16)
def _tanh_sinh_nodes(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w_i, weight_i)`` of the tanh-sinh rule on (0, 1), each ``[N]``, built in float64, cast to ``dtype``.

    ``w(t) = sigmoid(pi sinh t)``, ``dw/dt = pi cosh(t) w (1 - w)``, ``t_i = i h``; ``log w`` is computed as
    ``-softplus(-pi sinh t)`` so it is exact near both ``w -> 0`` and ``w -> 1``. Built outside inference mode so
    that a first call under ``torch.inference_mode()`` does not cache tensors that autograd later refuses.
    """
    with torch.inference_mode(False):
        t_max = math.asinh(math.log(1.0 / _TANH_SINH_MIN_W) / math.pi)
        n = int(t_max / _TANH_SINH_STEP)
        t = torch.arange(-n, n + 1, dtype=torch.float64) * _TANH_SINH_STEP
        s = math.pi * torch.sinh(t)
        log_w = -F.softplus(-s)
        log_one_minus_w = -F.softplus(s)
        weights = _TANH_SINH_STEP * math.pi * torch.cosh(t) * torch.exp(log_w + log_one_minus_w)
        return log_w.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``x`` with ``softplus(x) = y`` for ``y > 0``: ``x = y + log(-expm1(-y))``."""
    return y + torch.log(-torch.expm1(-y))
