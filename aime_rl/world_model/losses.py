"""The training objective of the :class:`~aime_rl.world_model.vrnn.VRNN` and its loss helpers.

- :func:`training_losses`: every loss term of ``VRNN.forward`` (ELBO, open-loop, reward, continuation, the DP
  prior's KLs) and their weighted ``total``, from a window the VRNN has filtered with its posterior; the terms are
  described in the :mod:`~aime_rl.world_model.vrnn` module docstring and at ``VRNN.forward``.
- :func:`latent_kl`: the per-step Monte-Carlo ``KL(q(z_t) || mixture prior)``, optionally KL-balanced.
- :func:`symlog`, :func:`symexp`: the reward target transform (DreamerV3) and its inverse.
- private helpers: the open-loop, reward and continuation terms, the token cross-entropy of a frame
  (:func:`_token_nll`) and the mean over valid steps (:func:`_masked_mean`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .inputs import _check_step_tensor
from .mixture import active_components, balanced_kl, free_nats_kl, gaussian_mixture_kl_mc
from .states import MixturePrior, RecurrentState
from .stick_breaking import kumaraswamy_beta_kl

__all__ = ["latent_kl", "symexp", "symlog", "training_losses"]


def training_losses(
    vrnn: nn.Module,
    states: dict[str, Any],
    tokens: torch.Tensor,
    context: torch.Tensor,
    encoded: torch.Tensor,
    valid: torch.Tensor,
    rewards: torch.Tensor | None,
    terminated: torch.Tensor | None,
) -> dict[str, Any]:
    """The losses of :meth:`VRNN.forward <aime_rl.world_model.vrnn.VRNN.forward>`, from a filtered window.

    Args:
        vrnn: the :class:`~aime_rl.world_model.vrnn.VRNN` (its prior, heads and concentration are scored).
        states: ``VRNN.observe``'s dict of ``[B, T, ·]`` tensors for the window (posterior samples); it gets
            ``token_logits`` and ``pi`` added.
        tokens: ``[B, T, h, w, G]`` token ids; context: ``[B, T, D]``; encoded: the encoded actions ``[B, T, A]``.
        valid: bool ``[B, T]``, the steps whose action is real (the others get no reward/continue loss).
        rewards: ``[B, T]`` ``r_{t+1}`` (None: no reward loss). terminated: bool ``[B, T]`` (None: no
            continuation loss).

    Returns the dict documented at ``VRNN.forward``: the scalar ``total``, its parts, and ``states``.
    """
    c = vrnn.config
    b, t = context.shape[:2]
    context_prev = torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], 1)
    prior = vrnn.prior_params(states["h_prev"], context_prev)
    belief = torch.cat([states["h_prev"], states["z"]], -1)
    token_logits = vrnn.predict_tokens(belief)
    frame_nll, accuracy = _token_nll(token_logits, tokens)
    context_nll = 0.5 * (vrnn.context_decoder(belief) - context).square().sum(-1).mean()

    kl_per_step = latent_kl(states["post_mu"], states["post_log_sigma"], prior, c.kl_samples, c.kl_balance)
    kl_loss = free_nats_kl(kl_per_step, c.free_nats).mean()
    alpha0 = vrnn.concentration.sample()
    stick_kl = kumaraswamy_beta_kl(prior.stick_a, prior.stick_b, 1.0, alpha0).sum(-1).mean()
    concentration_kl = vrnn.concentration.kl()

    reward_loss = _reward_loss(vrnn, states["h"], rewards, valid, b, t)
    continue_loss = _continue_loss(vrnn, states["h"], terminated, valid, b, t)
    open_loop_nll = _open_loop_nll(vrnn, states, tokens, encoded)
    total = (
        c.frame_weight * frame_nll
        + c.open_loop_weight * open_loop_nll
        + c.context_weight * context_nll
        + c.kl_weight * kl_loss
        + c.stick_kl_weight * stick_kl
        + c.concentration_kl_weight * concentration_kl
        + c.reward_weight * reward_loss
        + c.continue_weight * continue_loss
    )
    pi = prior.mean_weights_log().exp()
    states.update(token_logits=token_logits, pi=pi)
    return {
        "total": total,
        "frame_nll": frame_nll,
        "token_accuracy": accuracy,
        "open_loop_nll": open_loop_nll,
        "context_nll": context_nll,
        "reward_loss": reward_loss,
        "continue_loss": continue_loss,
        "kl": kl_per_step.mean().detach(),
        "kl_loss": kl_loss,
        "stick_kl": stick_kl,
        "concentration_kl": concentration_kl,
        "alpha": vrnn.concentration.mean.detach(),
        "active_components": active_components(pi, c.active_threshold),
        "states": states,
    }


def _open_loop_nll(
    vrnn: nn.Module, states: dict[str, Any], tokens: torch.Tensor, encoded_actions: torch.Tensor
) -> torch.Tensor:
    """Token cross-entropy of frames imagined open loop (prior mode, real actions), per frame.

    From the carry after step ``i`` (``h_i``, ``cell_i``, ``c_i``) for every start ``i`` in ``0 … T-1-n``,
    ``n = min(open_loop_steps, T - 1)``: imagine ``z_{i+j}`` (``j = 1 … n``) as ``VRNN.prior_step`` with
    ``sample=False`` does, apply ``a_{i+j}`` between imagined steps, and score the frame head on the tokens of
    ``x_{i+j}``. Averaged over batch, starts and ``j``.
    """
    b, t = tokens.shape[:2]
    n = min(int(vrnn.config.open_loop_steps), t - 1)
    if n < 1:
        return states["h"].new_zeros(())
    starts = t - n

    def flat(x: torch.Tensor) -> torch.Tensor:  # [B, starts, ...] -> [B * starts, ...]
        return x.reshape(b * starts, *x.shape[2:])

    carry = RecurrentState(
        flat(states["h"][:, :starts]),
        flat(states["cell"][:, :starts]),
        flat(states["context"][:, :starts]),
    )
    logits, targets = [], []
    for j in range(1, n + 1):
        state = vrnn.prior_step(carry, sample=False)
        logits.append(vrnn.predict_tokens(state.belief))
        targets.append(flat(tokens[:, j : j + starts]))
        if j < n:
            carry = vrnn.transition(state, flat(encoded_actions[:, j : j + starts]))
    logits, targets = torch.stack(logits, 1), torch.stack(targets, 1)  # [B * starts, n, h, w, G(, K)]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")
    return nll / (b * starts * n)


def _reward_loss(vrnn: nn.Module, h, rewards, valid, b, t) -> torch.Tensor:
    if rewards is None:
        return h.new_zeros(())
    rewards = _check_step_tensor("rewards", rewards, b, t).to(h.device, h.dtype)
    prediction = vrnn.reward_head(h).squeeze(-1)
    target = symlog(rewards) if vrnn.config.reward_loss == "symlog" else rewards
    return _masked_mean((prediction - target).square(), valid)


def _continue_loss(vrnn: nn.Module, h, terminated, valid, b, t) -> torch.Tensor:
    if terminated is None:
        return h.new_zeros(())
    terminated = _check_step_tensor("terminated", terminated, b, t).to(h.device)
    target = 1.0 - terminated.to(h.dtype)
    logits = vrnn.continue_head(h).squeeze(-1)
    return _masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)`` (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) (exp|x| - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


def latent_kl(
    post_mu: torch.Tensor,
    post_log_sigma: torch.Tensor,
    prior: MixturePrior,
    num_samples: int,
    balance: float | None,
) -> torch.Tensor:
    """Per-step MC ``KL(q(z_t) || p(z_t))`` ``[B, T]`` with sampled stick weights (balanced if configured).

    ``post_mu``, ``post_log_sigma``: the posterior ``[B, T, Z]``; ``prior``: the mixture over ``[B, T]``;
    ``num_samples``: Monte-Carlo samples (``VRNNConfig.kl_samples``); ``balance``: the prior's weight of
    DreamerV3 KL balancing (``VRNNConfig.kl_balance``; ``None``: the plain KL).
    """
    log_pi = prior.sample_weights_log()
    kl_fn = functools.partial(gaussian_mixture_kl_mc, num_samples=num_samples)
    post, prior_args = (post_mu, post_log_sigma), (log_pi, prior.mu, prior.log_sigma)
    if balance is None:
        return kl_fn(*post, *prior_args)
    return balanced_kl(kl_fn, post, prior_args, alpha=balance)


def _token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over a frame's ``h·w·G`` positions, averaged over ``[B, T]``; and token accuracy."""
    b, t = tokens.shape[:2]
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    nll = F.cross_entropy(flat_logits, tokens.reshape(-1), reduction="sum") / (b * t)
    accuracy = (logits.detach().argmax(-1) == tokens).float().mean()
    return nll, accuracy


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
