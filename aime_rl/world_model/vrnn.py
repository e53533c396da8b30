"""VRNN world model on top of the frozen causal perception stack, with a Dirichlet-process mixture prior.

Notation: ``x_t`` frame, ``c_t`` its causal context (``perceiver.extract_context``), ``a_t`` the action taken after
seeing ``x_t``, ``r_{t+1}`` and ``terminated_{t+1}`` what ``a_t`` produced (the replay store's row ``t``). Per step::

    embedding   e_t = E(tokens(x_t))                        frozen tokenizer ids → codebook vectors → small conv
    posterior   q(z_t | e_t, c_t, h_{t-1})     = N(mu_q, sigma_q²)
    prior       p(z_t | h_{t-1}, c_{t-1})      = sum_k pi_k N(mu_k, sigma_k²),  k = 1..K
                pi = stick_breaking(v),  v_k ~ Kumaraswamy(a_k, b_k),  KL(Kuma(a, b) || Beta(1, alpha0))
                alpha0 ~ q(alpha0) = Gamma (learned, :class:`DPConcentration`)
    dynamics    h_t, cell_t = LSTMCell([z_t, c_t, a_t], (h_{t-1}, cell_{t-1}))
    heads       tokens of x_t      from [h_{t-1}, z_t]   (logits [h, w, G, num_codes], cross-entropy)
                context c_t        from [h_{t-1}, z_t]   (Gaussian NLL; the context source when imagining)
                reward r_{t+1}     from h_t              (symlog-MSE or MSE)
                continue 1 - term  from h_t              (Bernoulli, BCE)

Optional open-loop loss (``open_loop_steps = n > 0``, PlaNet's observation overshooting): from the filtered
state after every step ``t`` of a training window, imagine ``n`` steps with the prior's mode (as
:func:`~aime_rl.world_model.imagination.open_loop_rollout` does with ``sample=False``) and the real actions, and add
the frame head's token cross-entropy of the imagined frames ``x_{t+1} … x_{t+n}``. The ELBO alone trains the prior
only through the KL, one step ahead and on posterior inputs; on a short training budget its open-loop frames then
lag behind a "repeat the last frame" baseline, and this term trains exactly what an open-loop rollout uses.

The frame head reads the state *after* ``a_{t-1}`` (``h_{t-1}``) and the latent of step ``t``: it is the
next-frame head of the brief, "tokens of ``x_{t+1}`` from the state after ``a_t``", with the stochastic latent of
the new step supplying what the action alone cannot predict (a new ball's column). When observing, ``z_t`` comes
from the posterior (so the frame term is a reconstruction and the KL teaches the prior); when imagining, from the
mixture prior, and the context the next prior and LSTM step need is the context head's output
``ĉ_t = g(h_{t-1}, z_t)`` (option (b) of the design brief; it uses the latent of the same step so an imagined
``z_t`` gives a matching context).

Frame embedding: the tokenizer's quantized latents (codebook vectors of the frame's tokens, ``[code_dim, h, w]``)
through a 1×1 conv, a strided 3×3 conv and a linear layer. The tokens are needed anyway as the frame head's
targets, so one tokenizer pass serves both; the embedding is causal and streams exactly like the tokenizer.

The perception model is frozen: the VRNN keeps a plain reference to it (``vrnn.perceiver``), not a submodule, so
it is not in ``parameters()`` (optimizers never see it) nor in ``state_dict()`` (checkpoints hold only the VRNN,
and :meth:`VRNN.from_pretrained` takes the perceiver as an argument). ``vrnn.to(...)`` still moves it, and
``vrnn.train()`` leaves it in eval mode.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ..utils.io import CONFIG_NAME, load_module_dir, load_state_dict_strict, save_module_dir
from ..utils.validation import as_float_video, check_positive, check_size_estimate, config_kwargs
from .mixture import active_components, balanced_kl, free_nats_kl, gaussian_mixture_kl_mc
from .stick_breaking import (
    DPConcentration,
    kumaraswamy_beta_kl,
    kumaraswamy_mean,
    sample_kumaraswamy,
    stick_breaking_log_weights,
)

__all__ = ["RecurrentState", "StepState", "VRNN", "VRNNConfig", "symexp", "symlog"]

#: Kumaraswamy parameters are kept in the range where ``kumaraswamy_beta_kl`` is accurate.
STICK_PARAM_RANGE = (0.05, 100.0)
REWARD_LOSSES = ("symlog", "mse")


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)`` (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) (exp|x| - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


@dataclass
class VRNNConfig:
    """Hyperparameters of :class:`VRNN` (JSON-able; saved with the weights).

    Attributes:
        action_dim: number of discrete actions (``discrete=True``) or size of a continuous action vector.
        discrete: integer actions ``[B, T]`` (one-hot encoded) or float actions ``[B, T, action_dim]``.
        hidden_dim: LSTM state size H. latent_dim: z size Z. embed_dim: frame embedding size.
        mlp_dim: width of the posterior/prior/head MLPs. decoder_channels: channels of the token-grid conv nets.
        max_components: K, the truncation level of the stick-breaking mixture prior.
        min_std: lower bound of every Gaussian standard deviation (posterior and prior components).
        context_window: frames the perceiver's attention sees (``extract_context(window=...)``); None = all.
        kl_samples: Monte-Carlo samples of ``KL(q || mixture)``.
        free_nats: DreamerV3 free nats on the per-step KL (``0``: off).
        kl_balance: DreamerV3 KL balancing weight of the prior (``None``: plain KL).
        kl_weight, stick_kl_weight, concentration_kl_weight, frame_weight, reward_weight, continue_weight,
            context_weight: loss weights (the concentration KL is a global term, added once per batch).
        reward_loss: ``"symlog"`` (MSE in symlog space) or ``"mse"``.
        open_loop_steps: ``n`` of the open-loop loss (see the module docstring; ``0``: off, the plain ELBO).
        open_loop_weight: its weight (it is a per-frame token cross-entropy, on the scale of ``frame_nll``).
        dp_prior_shape, dp_prior_rate: Gamma prior over the DP concentration alpha0.
        active_threshold: a component is active when its mean weight ``pi_k`` exceeds this.
        context_dim, token_grid, num_quantizers, num_codes, code_dim: taken from the perceiver (checked on load).
    """

    action_dim: int
    discrete: bool = True
    hidden_dim: int = 256
    latent_dim: int = 32
    embed_dim: int = 256
    mlp_dim: int = 256
    decoder_channels: int = 64
    max_components: int = 15
    min_std: float = 0.1
    context_window: int | None = 16
    kl_samples: int = 1
    free_nats: float = 1.0
    kl_balance: float | None = 0.8
    kl_weight: float = 1.0
    stick_kl_weight: float = 1.0
    concentration_kl_weight: float = 1e-3
    frame_weight: float = 1.0
    reward_weight: float = 1.0
    continue_weight: float = 1.0
    context_weight: float = 1.0
    reward_loss: str = "symlog"
    open_loop_steps: int = 0
    open_loop_weight: float = 1.0
    dp_prior_shape: float = 1.0
    dp_prior_rate: float = 1.0
    active_threshold: float = 0.01
    context_dim: int | None = None
    token_grid: tuple[int, int] | None = None
    num_quantizers: int | None = None
    num_codes: int | None = None
    code_dim: int | None = None

    def __post_init__(self) -> None:
        positive = ("action_dim", "hidden_dim", "latent_dim", "embed_dim", "mlp_dim", "decoder_channels")
        for name in (*positive, "kl_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VRNNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_components < 2:
            raise ValueError(f"VRNNConfig.max_components must be >= 2, got {self.max_components}")
        if not self.min_std > 0:
            raise ValueError(f"VRNNConfig.min_std must be > 0, got {self.min_std}")
        if self.kl_balance is not None and not 0.0 <= self.kl_balance <= 1.0:
            raise ValueError(f"VRNNConfig.kl_balance must be in [0, 1] or None, got {self.kl_balance}")
        if self.reward_loss not in REWARD_LOSSES:
            raise ValueError(
                f"VRNNConfig.reward_loss must be one of {REWARD_LOSSES}, got {self.reward_loss!r}"
            )
        if int(self.open_loop_steps) < 0:
            raise ValueError(f"VRNNConfig.open_loop_steps must be >= 0, got {self.open_loop_steps}")
        if self.free_nats < 0:
            raise ValueError(f"VRNNConfig.free_nats must be >= 0, got {self.free_nats}")
        if self.token_grid is not None:
            self.token_grid = (int(self.token_grid[0]), int(self.token_grid[1]))


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


# ------------------------------------------------------------------------------------------------ building blocks


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear → LayerNorm → SiLU → Linear``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim)
    )


class TokenGridEncoder(nn.Module):
    """Quantized latents ``[N, code_dim, h, w]`` → frame embedding ``[N, embed_dim]``.

    1×1 conv to ``channels``, a 3×3 conv (stride 2 when the grid is at least 4×4), flatten, linear, LayerNorm.
    """

    def __init__(self, code_dim: int, grid: tuple[int, int], channels: int, embed_dim: int):
        super().__init__()
        stride = 2 if min(grid) >= 4 else 1
        out_grid = [(size - 1) // stride + 1 for size in grid]
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(channels * out_grid[0] * out_grid[1], embed_dim),
            nn.LayerNorm(embed_dim),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


class TokenGridDecoder(nn.Module):
    """Features ``[N, F]`` → token logits ``[N, h, w, G, num_codes]``.

    ``Linear(F → C·h·w)``, reshape to a ``[C, h, w]`` map, a residual 3×3 conv, then a 1×1 conv to ``G · num_codes``.
    """

    def __init__(
        self, feature_dim: int, grid: tuple[int, int], channels: int, num_heads: int, num_codes: int
    ):
        super().__init__()
        self.grid, self.channels = grid, channels
        self.num_heads, self.num_codes = num_heads, num_codes
        self.project = nn.Linear(feature_dim, channels * grid[0] * grid[1])
        self.mix = nn.Sequential(
            nn.GroupNorm(1, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.out = nn.Sequential(
            nn.GroupNorm(1, channels), nn.SiLU(), nn.Conv2d(channels, num_heads * num_codes, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.project(features).view(-1, self.channels, *self.grid)
        x = x + self.mix(x)
        logits = self.out(x)
        return rearrange(logits, "n (g k) h w -> n h w g k", g=self.num_heads)


# ----------------------------------------------------------------------------------------------------------- VRNN


class VRNN(nn.Module):
    """Variational RNN world model with a stick-breaking (truncated DP) Gaussian-mixture prior.

    Args:
        perceiver: a :class:`~aime_rl.perception.CausalPerceiverIO` (frozen, kept by reference; see module doc).
        action_dim: number of discrete actions, or the size of a continuous action.
        discrete: whether actions are integer ids.
        **options: any other :class:`VRNNConfig` field (``hidden_dim``, ``max_components``, ``free_nats``, ...).

    Main entry points: :meth:`forward` (training losses), :meth:`observe` (posterior filtering of a sequence),
    :meth:`posterior_step` / :meth:`prior_step` / :meth:`transition` (one step, for streaming and imagination),
    :meth:`perceive` (frames → tokens and context), :meth:`save_pretrained` / :meth:`from_pretrained`.
    """

    def __init__(self, perceiver: nn.Module, action_dim: int, discrete: bool = True, **options: Any):
        super().__init__()
        known = {f.name for f in dataclasses.fields(VRNNConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown VRNN option(s) {unknown}; valid: {sorted(known - {'action_dim', 'discrete'})}"
            )
        spec = _perception_spec(perceiver)
        for name, value in spec.items():
            given = options.get(name)
            if given is not None and _normalise(given) != _normalise(value):
                raise ValueError(f"{name}={given!r} does not match the perceiver's {value!r}")
        config = VRNNConfig(action_dim=int(action_dim), discrete=bool(discrete), **{**options, **spec})
        self.config = config
        # a plain reference, not a submodule (see the module docstring)
        object.__setattr__(self, "_perceiver", perceiver)
        perceiver.eval()

        c = config
        grid = c.token_grid
        self.frame_encoder = TokenGridEncoder(c.code_dim, grid, c.decoder_channels, c.embed_dim)
        self.posterior_net = mlp(c.embed_dim + c.context_dim + c.hidden_dim, c.mlp_dim, 2 * c.latent_dim)
        num_sticks = c.max_components - 1
        self.prior_trunk = nn.Sequential(
            nn.Linear(c.hidden_dim + c.context_dim, c.mlp_dim), nn.LayerNorm(c.mlp_dim), nn.SiLU()
        )
        self.prior_sticks = nn.Linear(c.mlp_dim, 2 * num_sticks)
        self.prior_components = nn.Linear(c.mlp_dim, 2 * c.max_components * c.latent_dim)
        self.rnn = nn.LSTMCell(c.latent_dim + c.context_dim + c.action_dim, c.hidden_dim)
        self.frame_decoder = TokenGridDecoder(
            self.belief_dim, grid, c.decoder_channels, c.num_quantizers, c.num_codes
        )
        self.context_decoder = mlp(self.belief_dim, c.mlp_dim, c.context_dim)
        self.reward_head = mlp(c.hidden_dim, c.mlp_dim, 1)
        self.continue_head = mlp(c.hidden_dim, c.mlp_dim, 1)
        self.concentration = DPConcentration(c.dp_prior_shape, c.dp_prior_rate)
        with torch.no_grad():  # start by predicting "continue" (most steps are not terminal)
            self.continue_head[-1].bias.fill_(3.0)

    # -- sizes and housekeeping ----------------------------------------------------------------------------------

    @property
    def perceiver(self) -> nn.Module:
        """The frozen perception model (not a submodule: not in ``parameters()`` nor ``state_dict()``)."""
        return self._perceiver

    @property
    def belief_dim(self) -> int:
        """Size of :attr:`StepState.belief`: ``hidden_dim + latent_dim``."""
        return self.config.hidden_dim + self.config.latent_dim

    @property
    def context_dim(self) -> int:
        return self.config.context_dim

    @property
    def device(self) -> torch.device:
        return self.rnn.weight_ih.device

    def _apply(self, fn, *args, **kwargs):
        """``to()``/``cuda()``/``float()`` also move the (unregistered) perceiver."""
        super()._apply(fn, *args, **kwargs)
        self.perceiver._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> VRNN:
        """Set the VRNN's mode; the frozen perceiver always stays in eval mode."""
        super().train(mode)
        self.perceiver.eval()
        return self

    # -- perception (frozen) -------------------------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, 3, H, W]`` (float in [0, 1] or uint8) → token ids ``[B, T, h, w, G]`` (no gradient)."""
        frames = self._check_frames(frames)
        tokens = self.perceiver.tokenizer.encode(frames)[0]
        return tokens.unsqueeze(-1) if tokens.dim() == 4 else tokens

    @torch.no_grad()
    def context_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, T, h, w, G]`` → context ``[B, T, D]``; equals ``perceiver.extract_context(frames, window)``."""
        predictor = self.perceiver.predictor
        latents = predictor.encode_tokens(tokens, tokens.shape[1], self.config.context_window)
        return predictor.frame_context(latents)

    def perceive(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[B, T, 3, H, W]`` → ``(tokens [B, T, h, w, G], context [B, T, D])`` with one tokenizer pass."""
        tokens = self.tokenize(frames)
        return tokens, self.context_from_tokens(tokens)

    @torch.no_grad()
    def token_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., h, w, G]`` → codebook vectors ``[..., code_dim, h, w]``."""
        latents = self.perceiver.tokenizer.quantizer.lookup(tokens.long())
        return latents.movedim(-1, -3)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frame embedding ``e_t``: tokens ``[B, (T,) h, w, G]`` → ``[B, (T,) embed_dim]``."""
        latents = self.token_latents(tokens)
        lead = latents.shape[:-3]
        return self.frame_encoder(latents.reshape(-1, *latents.shape[-3:])).view(*lead, -1)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, T, h, w, G]`` → frames ``[B, T, 3, H, W]`` in [0, 1] via ``tokenizer.decode``."""
        return self.perceiver.tokenizer.decode(
            tokens.squeeze(-1) if self.config.num_quantizers == 1 else tokens
        )

    # -- actions -------------------------------------------------------------------------------------------------

    def encode_actions(self, actions: torch.Tensor, leading: tuple[int, ...] | None = None) -> torch.Tensor:
        """Actions → float ``[*leading, action_dim]`` (one-hot for discrete actions).

        Discrete: integer ids ``[*leading]`` (or ``[*leading, 1]``) in ``[0, action_dim)``. Continuous: float
        ``[*leading, action_dim]``. ``leading`` (e.g. ``(B, T)``) is checked when given. Raises ``ValueError``
        naming ``actions``.
        """
        c = self.config
        actions = torch.as_tensor(actions, device=self.device)
        if c.discrete:
            if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
                raise ValueError(f"actions must be integer ids (discrete actions), got dtype {actions.dtype}")
            if leading is not None and actions.dim() == len(leading) + 1 and actions.shape[-1] == 1:
                actions = actions.squeeze(-1)
            if leading is not None and tuple(actions.shape) != tuple(leading):
                raise ValueError(
                    f"actions must have shape {list(leading)} (integer ids), got {tuple(actions.shape)}"
                )
            if actions.numel() and (actions.min() < 0 or actions.max() >= c.action_dim):
                raise ValueError(
                    f"actions must be ids in [0, {c.action_dim}), got values in "
                    f"[{int(actions.min())}, {int(actions.max())}]"
                )
            return F.one_hot(actions.long(), c.action_dim).to(self.rnn.weight_ih.dtype)
        expected = (*leading, c.action_dim) if leading is not None else None
        if (
            actions.dim() == 0
            or actions.shape[-1] != c.action_dim
            or (expected is not None and tuple(actions.shape) != expected)
        ):
            want = list(expected) if expected is not None else f"[..., {c.action_dim}]"
            raise ValueError(
                f"actions must have shape {want} (continuous actions), got {tuple(actions.shape)}"
            )
        if not actions.is_floating_point():
            raise ValueError(f"actions must be float (continuous actions), got dtype {actions.dtype}")
        return actions.to(self.rnn.weight_ih.dtype)

    # -- one step ------------------------------------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> RecurrentState:
        """Zeros: ``h_{-1} = cell_{-1} = 0`` and ``c_{-1} = 0``."""
        c, dtype = self.config, self.rnn.weight_ih.dtype
        zeros = functools.partial(torch.zeros, device=self.device, dtype=dtype)
        return RecurrentState(
            zeros(batch_size, c.hidden_dim), zeros(batch_size, c.hidden_dim), zeros(batch_size, c.context_dim)
        )

    def posterior_params(
        self, embedding: torch.Tensor, context: torch.Tensor, h_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z_t | e_t, c_t, h_{t-1})``: ``(mu, log_sigma)``, each ``[..., Z]``; ``sigma = min_std + softplus(.)``."""
        out = self.posterior_net(torch.cat([embedding, context, h_prev], -1)).float()  # fp32 under autocast
        raw_mu, raw_sigma = out.chunk(2, -1)
        return raw_mu, torch.log(self.config.min_std + F.softplus(raw_sigma))

    def prior_params(self, h_prev: torch.Tensor, context_prev: torch.Tensor) -> MixturePrior:
        """``p(z_t | h_{t-1}, c_{t-1})`` as a :class:`MixturePrior` over leading dims ``[...]``.

        Stick parameters ``a, b = 0.05 + softplus(.)`` (clamped to 100); component scales ``min_std + softplus(.)``.
        """
        c = self.config
        trunk = self.prior_trunk(torch.cat([h_prev, context_prev], -1))
        # distribution maths in float32 also under bf16 autocast (1 - 1e-6 rounds to 1 in bf16)
        raw_a, raw_b = self.prior_sticks(trunk).float().chunk(2, -1)
        low, high = STICK_PARAM_RANGE
        stick_a = (low + F.softplus(raw_a)).clamp(max=high)
        stick_b = (low + F.softplus(raw_b)).clamp(max=high)
        components = self.prior_components(trunk).float().unflatten(-1, (c.max_components, 2 * c.latent_dim))
        mu, raw_sigma = components.chunk(2, -1)
        return MixturePrior(stick_a, stick_b, mu, torch.log(c.min_std + F.softplus(raw_sigma)))

    def posterior_step(
        self,
        carry: RecurrentState,
        embedding: torch.Tensor,
        context: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> StepState:
        """Observe step t: ``z_t ~ q(z | e_t, c_t, h_{t-1})`` (its mean when ``sample=False``)."""
        mu, log_sigma = self.posterior_params(embedding, context, carry.h)
        z = _gaussian_sample(mu, log_sigma, generator) if sample else mu
        return StepState(carry.h, carry.cell, z, context)

    def prior_step(
        self, carry: RecurrentState, sample: bool = True, generator: torch.Generator | None = None
    ) -> StepState:
        """Imagine step t: ``z_t ~ p(z | h_{t-1}, c_{t-1})`` and the context ``ĉ_t = g(h_{t-1}, z_t)``.

        ``sample=False`` takes the mode-seeking point estimate: the mean of the component with the largest mean
        weight.
        """
        prior = self.prior_params(carry.h, carry.context)
        if sample:
            log_pi = prior.sample_weights_log(generator)
            component = torch.multinomial(log_pi.exp(), 1, generator=generator).squeeze(-1)
        else:
            component = prior.mean_weights_log().argmax(-1)
        index = component.view(-1, 1, 1).expand(-1, 1, self.config.latent_dim)
        mu = prior.mu.gather(1, index).squeeze(1)
        log_sigma = prior.log_sigma.gather(1, index).squeeze(1)
        z = _gaussian_sample(mu, log_sigma, generator) if sample else mu
        context = self.context_decoder(torch.cat([carry.h, z], -1))
        return StepState(carry.h, carry.cell, z, context)

    def transition(self, state: StepState, action: torch.Tensor) -> RecurrentState:
        """``h_t = LSTMCell([z_t, c_t, a_t], (h_{t-1}, cell_{t-1}))``; ``action``: encoded ``[B, A]``."""
        h, cell = self.rnn(torch.cat([state.z, state.context, action], -1), (state.h, state.cell))
        return RecurrentState(h, cell, state.context)

    def predict_tokens(self, belief: torch.Tensor) -> torch.Tensor:
        """Belief ``[..., H + Z]`` → token logits ``[..., h, w, G, num_codes]``."""
        lead = belief.shape[:-1]
        logits = self.frame_decoder(belief.reshape(-1, belief.shape[-1]))
        return logits.view(*lead, *logits.shape[1:])

    def predict_reward(self, h: torch.Tensor) -> torch.Tensor:
        """``h_t [..., H]`` → predicted reward ``r_{t+1}`` ``[...]`` in env units."""
        out = self.reward_head(h).squeeze(-1)
        return symexp(out) if self.config.reward_loss == "symlog" else out

    def predict_continue(self, h: torch.Tensor) -> torch.Tensor:
        """``h_t [..., H]`` → probability that the episode continues after ``a_t``, ``[...]``."""
        return torch.sigmoid(self.continue_head(h).squeeze(-1))

    # -- sequences -----------------------------------------------------------------------------------------------

    def observe(
        self,
        frames: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        *,
        tokens: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Filter a sequence with the posterior (no losses).

        Args:
            frames: ``[B, T, 3, H, W]``; or give ``tokens [B, T, h, w(, G)]`` (and optionally ``context``).
            actions: ``[B, T]`` ids or ``[B, T, A]``: ``a_t`` follows ``x_t``; the last action is used only for
                ``h_T - 1`` (``states["h"][:, -1]``). ``None``: zeros (only the posterior of the first step and
                what it gives are then meaningful).

        Returns a dict of ``[B, T, ·]`` tensors: ``h_prev`` (``h_{t-1}``), ``cell_prev``, ``z``, ``post_mu``,
        ``post_log_sigma``, ``context`` (``c_t``), ``h`` and ``cell`` (``h_t`` after ``a_t``), ``tokens``; plus
        ``last`` (:class:`StepState` of the final step) and ``carry`` (:class:`RecurrentState` after the final
        action).
        """
        tokens, context = self._inputs(frames, tokens, context)
        b, t = context.shape[:2]
        encoded = self._encoded_actions(actions, b, t)
        return self._filter(tokens, context, encoded, sample, generator)

    def _filter(self, tokens, context, encoded_actions, sample, generator) -> dict[str, Any]:
        b, t = context.shape[:2]
        embedding = self.embed_tokens(tokens)
        carry = self.initial_state(b)
        keys = ("h_prev", "cell_prev", "z", "post_mu", "post_log_sigma", "h", "cell")
        steps: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        state = None
        for i in range(t):
            mu, log_sigma = self.posterior_params(embedding[:, i], context[:, i], carry.h)
            z = _gaussian_sample(mu, log_sigma, generator) if sample else mu
            state = StepState(carry.h, carry.cell, z, context[:, i])
            carry = self.transition(state, encoded_actions[:, i])
            for key, value in zip(
                keys, (state.h, state.cell, z, mu, log_sigma, carry.h, carry.cell), strict=True
            ):
                steps[key].append(value)
        out: dict[str, Any] = {k: torch.stack(v, 1) for k, v in steps.items()}
        out.update(context=context, tokens=tokens, last=state, carry=carry)
        return out

    def forward(
        self,
        frames: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        terminated: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        *,
        tokens: torch.Tensor | None = None,
        is_last: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Training losses on a window of replay (row convention of :mod:`aime_rl.replay.store`).

        Args:
            frames: uint8/float ``[B, T, 3, H, W]`` (may be None when ``tokens`` is given).
            actions: ``[B, T]`` integer ids (discrete) or ``[B, T, A]`` float (continuous); ``a_t`` follows ``x_t``.
            rewards: ``[B, T]`` ``r_{t+1}`` (None: no reward loss). terminated: bool ``[B, T]`` (None: no
                continuation loss).
            context: ``[B, T, D]`` precomputed context (None: from the perceiver, no grad).
            tokens: ``[B, T, h, w(, G)]`` precomputed token ids (None: from the tokenizer, no grad).
            is_last: bool ``[B, T]``; rows whose action is a dummy (final observation) get no reward/continue loss.

        Returns a dict with the scalar ``total`` and its parts: ``frame_nll`` (token cross-entropy summed over the
        ``h·w·G`` positions of a frame), ``token_accuracy``, ``open_loop_nll`` (the same cross-entropy for frames
        imagined open loop; ``0`` unless ``open_loop_steps``, see the module docstring), ``context_nll``
        (``½‖ĉ_t − c_t‖²``), ``reward_loss``, ``continue_loss``, ``kl`` (MC ``KL(q || mixture)`` per step, before
        free nats), ``kl_loss`` (after free nats and balancing), ``stick_kl`` (per step, summed over sticks),
        ``concentration_kl``, ``alpha`` (``E[alpha0]``), ``active_components`` (mean count of
        ``pi_k > active_threshold``), and ``states``: a dict of ``[B, T, ·]`` tensors (see :meth:`observe`) plus
        ``token_logits [B, T, h, w, G, K]``, ``pi`` ``[B, T, K]`` (mean stick weights).
        """
        c = self.config
        tokens, context = self._inputs(frames, tokens, context)
        b, t = context.shape[:2]
        encoded = self._encoded_actions(actions, b, t, required=True)
        valid = self._step_mask(is_last, b, t)
        states = self._filter(tokens, context, encoded, True, generator)

        context_prev = torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], 1)
        prior = self.prior_params(states["h_prev"], context_prev)
        belief = torch.cat([states["h_prev"], states["z"]], -1)
        token_logits = self.predict_tokens(belief)
        frame_nll, accuracy = _token_nll(token_logits, tokens)
        context_nll = 0.5 * (self.context_decoder(belief) - context).square().sum(-1).mean()

        kl_per_step = self._latent_kl(states["post_mu"], states["post_log_sigma"], prior)
        kl_loss = free_nats_kl(kl_per_step, c.free_nats).mean()
        alpha0 = self.concentration.sample()
        stick_kl = kumaraswamy_beta_kl(prior.stick_a, prior.stick_b, 1.0, alpha0).sum(-1).mean()
        concentration_kl = self.concentration.kl()

        reward_loss = self._reward_loss(states["h"], rewards, valid, b, t)
        continue_loss = self._continue_loss(states["h"], terminated, valid, b, t)
        open_loop_nll = self._open_loop_nll(states, tokens, encoded)
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
            "alpha": self.concentration.mean.detach(),
            "active_components": active_components(pi, c.active_threshold),
            "states": states,
        }

    def _open_loop_nll(
        self, states: dict[str, Any], tokens: torch.Tensor, encoded_actions: torch.Tensor
    ) -> torch.Tensor:
        """Token cross-entropy of frames imagined open loop (prior mode, real actions), per frame.

        From the carry after step ``i`` (``h_i``, ``cell_i``, ``c_i``) for every start ``i`` in ``0 … T-1-n``,
        ``n = min(open_loop_steps, T - 1)``: imagine ``z_{i+j}`` (``j = 1 … n``) as :meth:`prior_step` with
        ``sample=False`` does, apply ``a_{i+j}`` between imagined steps, and score the frame head on the tokens of
        ``x_{i+j}``. Averaged over batch, starts and ``j``.
        """
        b, t = tokens.shape[:2]
        n = min(int(self.config.open_loop_steps), t - 1)
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
            state = self.prior_step(carry, sample=False)
            logits.append(self.predict_tokens(state.belief))
            targets.append(flat(tokens[:, j : j + starts]))
            if j < n:
                carry = self.transition(state, flat(encoded_actions[:, j : j + starts]))
        logits, targets = torch.stack(logits, 1), torch.stack(targets, 1)  # [B * starts, n, h, w, G(, K)]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum"
        )
        return nll / (b * starts * n)

    def _latent_kl(
        self, post_mu: torch.Tensor, post_log_sigma: torch.Tensor, prior: MixturePrior
    ) -> torch.Tensor:
        """Per-step MC ``KL(q(z_t) || p(z_t))`` ``[B, T]`` with sampled stick weights (balanced if configured)."""
        c = self.config
        log_pi = prior.sample_weights_log()
        kl_fn = functools.partial(gaussian_mixture_kl_mc, num_samples=c.kl_samples)
        post, prior_args = (post_mu, post_log_sigma), (log_pi, prior.mu, prior.log_sigma)
        if c.kl_balance is None:
            return kl_fn(*post, *prior_args)
        return balanced_kl(kl_fn, post, prior_args, alpha=c.kl_balance)

    def _reward_loss(self, h, rewards, valid, b, t) -> torch.Tensor:
        if rewards is None:
            return h.new_zeros(())
        rewards = _check_step_tensor("rewards", rewards, b, t).to(h.device, h.dtype)
        prediction = self.reward_head(h).squeeze(-1)
        target = symlog(rewards) if self.config.reward_loss == "symlog" else rewards
        return _masked_mean((prediction - target).square(), valid)

    def _continue_loss(self, h, terminated, valid, b, t) -> torch.Tensor:
        if terminated is None:
            return h.new_zeros(())
        terminated = _check_step_tensor("terminated", terminated, b, t).to(h.device)
        target = 1.0 - terminated.to(h.dtype)
        logits = self.continue_head(h).squeeze(-1)
        return _masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)

    # -- input checks --------------------------------------------------------------------------------------------

    def _check_frames(self, frames: torch.Tensor) -> torch.Tensor:
        frames = as_float_video(frames, "frames", channels=3)
        expected = tuple(d * self.perceiver.tokenizer.downsample for d in self.config.token_grid)
        if tuple(frames.shape[-2:]) != expected:
            raise ValueError(
                f"frames must be [B, T, 3, {expected[0]}, {expected[1]}] (the perceiver's frame size), "
                f"got shape {tuple(frames.shape)}"
            )
        return frames.to(self.device)

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor [B, T, h, w, G], got {type(tokens).__name__}")
        if c.num_quantizers == 1 and tokens.dim() == 4:
            tokens = tokens.unsqueeze(-1)
        expected = (*c.token_grid, c.num_quantizers)
        if tokens.dim() != 5 or tuple(tokens.shape[2:]) != expected:
            raise ValueError(
                f"tokens must have shape [B, T, {', '.join(map(str, expected))}], got {tuple(tokens.shape)}"
            )
        return tokens.to(self.device)

    def _inputs(self, frames, tokens, context) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens is None:
            if frames is None:
                raise ValueError("frames must be given ([B, T, 3, H, W]) when tokens is None")
            tokens = self.tokenize(frames)
        else:
            tokens = self._check_tokens(tokens)
            if frames is not None and tuple(frames.shape[:2]) != tuple(tokens.shape[:2]):
                raise ValueError(
                    f"frames [B, T, ...] {tuple(frames.shape)} and tokens {tuple(tokens.shape)} disagree on B, T"
                )
        if context is None:
            context = self.context_from_tokens(tokens)
        else:
            expected = (*tokens.shape[:2], self.config.context_dim)
            if not isinstance(context, torch.Tensor) or tuple(context.shape) != expected:
                raise ValueError(
                    f"context must have shape {list(expected)}, got {tuple(getattr(context, 'shape', ()))}"
                )
            context = context.to(self.device, self.rnn.weight_ih.dtype)
        return tokens, context

    def _encoded_actions(self, actions, b: int, t: int, required: bool = False) -> torch.Tensor:
        if actions is None:
            if required:
                raise ValueError(f"actions must be given ([B={b}, T={t}] ids or [B, T, A] floats)")
            return torch.zeros(
                b, t, self.config.action_dim, device=self.device, dtype=self.rnn.weight_ih.dtype
            )
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(actions)
        if actions.dim() >= 2 and tuple(actions.shape[:2]) != (b, t):
            raise ValueError(
                f"actions must have leading dims [B={b}, T={t}] like the frames, got shape {tuple(actions.shape)}"
            )
        return self.encode_actions(actions, (b, t))

    def _step_mask(self, is_last, b: int, t: int) -> torch.Tensor:
        if is_last is None:
            return torch.ones(b, t, dtype=torch.bool, device=self.device)
        return ~_check_step_tensor("is_last", is_last, b, t).to(self.device, torch.bool)

    # -- save / load ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (the VRNN only, not the perceiver) into ``directory``."""
        save_module_dir(directory, self, {"class": "VRNN", **asdict(self.config)})

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, perceiver: nn.Module, map_location: str | torch.device = "cpu"
    ) -> VRNN:
        """Load a VRNN written by :meth:`save_pretrained` on top of ``perceiver`` (whose sizes must match).

        ``ValueError`` naming the file for a missing/corrupted file, weights that fail the checksum manifest or
        hold NaN/inf; naming the key for an unknown, missing or mistyped ``config.json`` key or an absurd size
        (refused before anything is allocated).
        """
        config, state = load_module_dir(directory)
        if config.pop("class", None) != "VRNN":
            raise ValueError(f"{directory} does not hold a VRNN checkpoint (config.json 'class')")
        source = Path(directory) / CONFIG_NAME
        config = config_kwargs(VRNNConfig, config, source)
        _check_loaded_sizes(config, source)
        action_dim, discrete = config.pop("action_dim"), config.pop("discrete")
        model = cls(perceiver, action_dim, discrete, **config)
        load_state_dict_strict(model, state, directory)
        return model.to(map_location)


# ------------------------------------------------------------------------------------------------------ helpers


def _check_loaded_sizes(config: dict[str, Any], source: Any) -> None:
    """Refuse sizes < 1 and configs whose layers would hold absurdly many elements, naming the keys."""
    keys = (
        "action_dim",
        "hidden_dim",
        "latent_dim",
        "embed_dim",
        "mlp_dim",
        "decoder_channels",
        "max_components",
    )
    check_positive({k: config[k] for k in keys}, str(source))
    h, z, m, c = config["hidden_dim"], config["latent_dim"], config["mlp_dim"], config["decoder_channels"]
    d = config["context_dim"] or 1
    grid = config["token_grid"] or (1, 1)
    check_size_estimate(
        {
            "hidden_dim (LSTM)": 4 * h * (h + z + d + config["action_dim"]),
            "mlp_dim (posterior, prior and heads)": m * (m + 4 * (h + z) + 2 * d + config["embed_dim"]),
            "max_components × latent_dim × mlp_dim (prior components)": 2 * config["max_components"] * z * m,
            "decoder_channels, embed_dim (token-grid nets)": c
            * (9 * c + (h + z + config["embed_dim"]) * grid[0] * grid[1]),
        },
        f"VRNN ({source})",
    )


def _perception_spec(perceiver: nn.Module) -> dict[str, Any]:
    """Sizes the VRNN takes from the perceiver; raises for setups it does not support."""
    tokenizer = getattr(perceiver, "tokenizer", None)
    if tokenizer is None or not hasattr(perceiver, "predictor"):
        raise ValueError(f"perceiver must be a CausalPerceiverIO, got {type(perceiver).__name__}")
    if tokenizer.temporal_factor != 1:
        raise ValueError(
            "the VRNN needs one token step per frame: use a perceiver with temporal_downsample=False"
        )
    height, width = perceiver.frame_size
    return {
        "context_dim": int(perceiver.context_dim),
        "token_grid": tuple(tokenizer.token_grid(height, width)),
        "num_quantizers": int(tokenizer.num_quantizers),
        "num_codes": int(tokenizer.num_codes),
        "code_dim": int(tokenizer.config.code_dim),
    }


def _normalise(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _gaussian_sample(
    mu: torch.Tensor, log_sigma: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Reparameterised ``mu + sigma * eps``, ``eps ~ N(0, I)``."""
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + log_sigma.exp() * noise


def _token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over a frame's ``h·w·G`` positions, averaged over ``[B, T]``; and token accuracy."""
    b, t = tokens.shape[:2]
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    nll = F.cross_entropy(flat_logits, tokens.reshape(-1), reduction="sum") / (b * t)
    accuracy = (logits.detach().argmax(-1) == tokens).float().mean()
    return nll, accuracy


def _check_step_tensor(name: str, value: torch.Tensor, b: int, t: int) -> torch.Tensor:
    value = torch.as_tensor(value)
    if tuple(value.shape) != (b, t):
        raise ValueError(f"{name} must have shape [B={b}, T={t}], got shape {tuple(value.shape)}")
    return value


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
