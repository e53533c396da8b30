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

This module holds the model; beside it are its config (:mod:`.config`), state types (:mod:`.states`), networks
(:mod:`.networks`), training losses (:mod:`.losses`) and input checks (:mod:`.inputs`). The names that were defined
here before that split are still importable from here (the ``import x as x`` lines).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..utils.io import CONFIG_NAME, load_module_dir, load_state_dict_strict, save_module_dir
from ..utils.validation import config_kwargs
from .config import REWARD_LOSSES as REWARD_LOSSES
from .config import VRNNConfig, _check_loaded_sizes, config_for_perceiver
from .config import _normalise as _normalise
from .config import _perception_spec as _perception_spec
from .inputs import _check_step_tensor as _check_step_tensor
from .inputs import (
    check_context,
    check_frames,
    check_tokens,
    encode_actions,
    encode_window_actions,
    step_mask,
)
from .losses import _masked_mean as _masked_mean
from .losses import _token_nll as _token_nll
from .losses import symexp, training_losses
from .losses import symlog as symlog
from .networks import TokenGridDecoder, TokenGridEncoder, mlp
from .states import MixturePrior, RecurrentState, StepState, _gaussian_sample
from .states import _fields as _fields
from .stick_breaking import DPConcentration

__all__ = ["RecurrentState", "StepState", "VRNN", "VRNNConfig", "symexp", "symlog"]

#: Kumaraswamy parameters are kept in the range where ``kumaraswamy_beta_kl`` is accurate.
STICK_PARAM_RANGE = (0.05, 100.0)


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

    Example (on an untrained tiny perceiver, small sizes):

    >>> import torch
    >>> from aime_rl.perception import CausalPerceiverIO
    >>> from aime_rl.world_model import VRNN
    >>> perceiver = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32))
    >>> vrnn = VRNN(perceiver, action_dim=3, hidden_dim=16, latent_dim=4, embed_dim=16, mlp_dim=16)
    >>> frames = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)  # [B, T, 3, H, W]
    >>> actions = torch.randint(0, 3, (2, 4))  # a_t, taken after frame t
    >>> losses = vrnn(frames, actions)  # training losses (rewards, terminated: optional)
    >>> bool(losses["total"].isfinite()), vrnn.observe(frames, actions)["h"].shape  # h_t [B, T, hidden_dim]
    (True, torch.Size([2, 4, 16]))
    """

    def __init__(self, perceiver: nn.Module, action_dim: int, discrete: bool = True, **options: Any):
        super().__init__()
        config = config_for_perceiver(perceiver, action_dim, discrete, options)
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
        tokens = self.perceiver.tokenizer.tokens(frames)
        return tokens.unsqueeze(-1) if tokens.dim() == 4 else tokens

    @torch.no_grad()
    def context_from_tokens(
        self,
        tokens: torch.Tensor,
        motion: torch.Tensor | None = None,
        changes: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens ``[B, T, h, w, G]`` → context ``[B, T, D]``; equals ``perceiver.extract_context(frames, window)``.

        ``motion``: the pixel motion marks ``[B, T, h, w]`` of the frames (:meth:`motion_marks`), for a perception
        model with ``motion_attention_bias``; without them the tokens' own changes stand in. ``changes``: their
        pixel changes ``[B, T, h, w, C · p · p]`` (:meth:`pixel_changes`), for one with ``pixel_changes``.
        ``frames`` ``[B, T, 3, H, W]``: read by a perception model whose local motion encoder reads pixels
        (without them, the tokenizer's decoding of the tokens stands in).
        """
        predictor = self.perceiver.predictor
        video = None if frames is None else predictor.tokenizer.check_video(frames, "frames")
        latents = predictor.encode_tokens(
            tokens,
            tokens.shape[1],
            self.config.context_window,
            motion=motion,
            changes=changes,
            local_motion=predictor.local_motion_features(tokens, video),
        )
        return predictor.output_context(predictor.frame_context(latents))

    @torch.no_grad()
    def motion_marks(self, frames: torch.Tensor) -> torch.Tensor | None:
        """Frames ``[B, T, 3, H, W]`` → the perception model's pixel motion marks ``[B, T, h, w]`` (None when it
        has no ``motion_attention_bias``)."""
        return self.perceiver.predictor.motion_marks(frames)

    @torch.no_grad()
    def pixel_changes(self, frames: torch.Tensor) -> torch.Tensor | None:
        """Frames ``[B, T, 3, H, W]`` → the perception model's pixel changes ``[B, T, h, w, C · p · p]`` (None when
        it has no ``pixel_changes``)."""
        return self.perceiver.predictor.pixel_changes(frames)

    def perceive(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[B, T, 3, H, W]`` → ``(tokens [B, T, h, w, G], context [B, T, D])`` with one tokenizer pass."""
        tokens = self.tokenize(frames)
        context = self.context_from_tokens(
            tokens, self.motion_marks(frames), self.pixel_changes(frames), frames
        )
        return tokens, context

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
        return encode_actions(actions, self.config, leading, self.device, self.rnn.weight_ih.dtype)

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
        tokens, context = self._inputs(frames, tokens, context)
        b, t = context.shape[:2]
        encoded = self._encoded_actions(actions, b, t, required=True)
        valid = self._step_mask(is_last, b, t)
        states = self._filter(tokens, context, encoded, True, generator)
        return training_losses(self, states, tokens, context, encoded, valid, rewards, terminated)

    # -- input checks --------------------------------------------------------------------------------------------

    def _check_frames(self, frames: torch.Tensor) -> torch.Tensor:
        frame_size = tuple(d * self.perceiver.tokenizer.downsample for d in self.config.token_grid)
        return check_frames(frames, frame_size, self.device)

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return check_tokens(tokens, self.config, self.device)

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
            if frames is None:
                context = self.context_from_tokens(tokens)
            else:
                context = self.context_from_tokens(
                    tokens, self.motion_marks(frames), self.pixel_changes(frames), frames
                )
        else:
            expected = (*tokens.shape[:2], self.config.context_dim)
            context = check_context(context, expected, self.device, self.rnn.weight_ih.dtype)
        return tokens, context

    def _encoded_actions(self, actions, b: int, t: int, required: bool = False) -> torch.Tensor:
        return encode_window_actions(
            actions, self.config, b, t, self.device, self.rnn.weight_ih.dtype, required
        )

    def _step_mask(self, is_last, b: int, t: int) -> torch.Tensor:
        return step_mask(is_last, b, t, self.device)

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
