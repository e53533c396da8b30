"""PerceiverTokenPredictor: a causal Perceiver IO over video tokens that predicts future tokens.

Tensor flow (defaults: 8×8 tokens, G = 4 heads, N = 128 latents, D = 256)::

    video [B, T, 3, 64, 64] → (frozen) tokenizer → tokens [B, T', 8, 8, G]
      → input adapter (sum of head embeddings + grid position
        [+ a mark: unchanged / changed since the previous step / first step, with mark_changes])  [B, T'·64, D]
      → PerceiverEncoder: per frame t, N latents cross-attend to the tokens of frames ≤ t (within ``window``;
        with motion_attention_bias, a learned score bonus per head for the tokens whose cell changed),
        then self-attend                                          latents [B, T, N, D]
      → context: mean (or projection) of the latents, LayerNorm  [B, T, D]     (also "medium"/"slow" summaries)
      → PerceiverDecoder: queries of future token positions (masked ids + grid + time offset) cross-attend to the
        latents of the last observed frame, then self-attend     logits [B, F, 8, 8, G, num_codes]

Training objective: MaskGIT's masked-token cross-entropy on the future frames (a cosine-scheduled random share of
them is masked; eval masks all), plus next-frame prediction from the latents of every earlier frame (this is what
trains the context at every t), plus LPIPS on the predicted frames through a differentiable soft-code path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict

import torch
from einops import rearrange, repeat
from torch import nn
from torch.nn import functional as F

from .config import CONTEXT_POOLINGS, PredictorConfig
from .generation import TokenGenerationMixin
from .losses import FOREGROUND_THRESHOLD, global_local_infonce, token_cross_entropy
from .modules.adapter import TiedTokenOutputAdapter, TokenInputAdapter
from .modules.decoder import PerceiverDecoder
from .modules.encoder import PerceiverEncoder
from .modules.kv_cache import check_window, window_mask
from .modules.local_motion import (
    LOCAL_MOTION_INPUTS,
    NEIGHBOURS,
    LocalMotionEncoder,
    history_known,
    inside_neighbours,
    neighbourhoods,
    pixel_motion_cells,
    pixel_motion_inputs,
    step_history,
)
from .modules.position import cell_centres, latent_homes
from .modules.temporal import CHANGED as CHANGED
from .modules.temporal import FIRST as FIRST
from .modules.temporal import (
    TIMESCALES,
    TimescaleSummary,
    change_marks,
    check_timescale,
    motion_marks,
    pixel_changes,
)
from .modules.temporal import UNCHANGED as UNCHANGED
from .modules.whitening import ContextWhitening
from .outputs import PredictorOutput
from .tokenizer import VQPTTokenizer


def check_decoder_channels(channels: int | None, heads: tuple[int, ...]) -> None:
    """``ValueError`` unless ``channels`` (``decoder_channels``) is None or a positive multiple of every head
    count in ``heads`` (the decoder's cross- and self-attention split it between their heads)."""
    if channels is None:
        return
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"decoder_channels must be a positive int or None, got {channels!r}")
    for count in heads:
        if channels % count:
            raise ValueError(f"decoder_channels={channels} must be divisible by the {count} attention heads")


def initial_motion_bias(num_heads: int, bias: float) -> torch.Tensor:
    """The starting cross-attention score bonus ``[heads, 3]`` per change mark (rows of a head: UNCHANGED, CHANGED,
    FIRST): ``bias`` for CHANGED in the first half of the heads (rounded up), 0 elsewhere.

    Half the heads start out following what moves, so a single moving object weighs like ``e^bias`` static cells
    from the first step; the other half start unbiased and keep seeing what stands still (a paddle that did not
    move this frame). Every entry is learned from there.
    """
    table = torch.zeros(num_heads, 3)
    table[: -(-num_heads // 2), CHANGED] = bias
    return table


def initial_spatial_slope(num_heads: int, slope: float) -> torch.Tensor:
    """The starting penalty per squared distance of a key's cell from a latent's home ``[heads]``: ``slope`` in the
    last ``heads // 2`` heads (the ones the motion bonus, on the first half rounded up, leaves unbiased; the one
    head of a one-head model), 0 in the others: those keep looking for what moves anywhere in the frame, these start
    as a coarse map of it."""
    table = torch.zeros(num_heads)
    table[-max(num_heads // 2, 1) :] = slope
    return table


def initial_recency_slope(num_heads: int, slope: float) -> torch.Tensor:
    """The starting penalty per frame of a key's age ``[heads]``: ``slope`` in every other head (0, 2, …), 0 in the
    rest. With the motion bias in the first half of the heads, the four kinds of head of a 4-head model each get
    one head: what moves now, what moved in the window, what stands there now, and all of the window."""
    table = torch.zeros(num_heads)
    table[::2] = slope
    return table


class PerceiverTokenPredictor(TokenGenerationMixin, nn.Module):
    """Perceiver IO token predictor on top of a (frozen) :class:`VQPTTokenizer`.

    Args: ``tokenizer``, the video tokenizer (registered as a submodule; frozen while training the predictor),
    then one per field of :class:`~aime_rl.perception.config.PredictorConfig` (documented there; the seed's
    hyperparameters are the defaults). ``from_config(config, tokenizer)`` builds the same model from a config;
    ``.config`` is this model's.
    """

    def __init__(
        self,
        tokenizer: VQPTTokenizer,
        num_latents: int = 128,
        num_latent_channels: int = 256,
        num_cross_attention_heads: int = 8,
        num_self_attention_layers: int = 6,
        widening_factor: int = 4,
        dropout: float = 0.1,
        sequence_length: int = 16,
        num_self_attention_heads: int | None = None,
        num_decoder_self_attention_layers: int = 1,
        num_condition_channels: int | None = None,
        label_smoothing: float = 0.1,
        perceptual_weight: float = 0.1,
        next_frame_weight: float = 1.0,
        window: int | None = None,
        context_prediction_weight: float = 0.0,
        mark_changes: bool = False,
        change_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        motion_attention_bias: float = 0.0,
        context_pooling: str = "mean",
        recency_bias: float = 0.0,
        context_whitening: bool = False,
        previous_tokens: bool = False,
        context_prediction_horizon: int = 1,
        embeddings_from_codes: bool = False,
        pixel_changes: bool = False,
        spatial_attention_bias: float = 0.0,
        encoder_iterations: int = 1,
        decoder_channels: int | None = None,
        latent_memory: int = 0,
        context_readout_tokens: int = 1,
        latent_reconstruction_weight: float = 0.0,
        next_frame_samples: int | None = None,
        local_motion_frames: int = 0,
        local_motion_weight: float = 1.0,
        local_motion_context: bool = False,
        local_motion_horizon: int = 1,
        local_motion_inputs: str = "codes",
        local_motion_history: bool = False,
        local_motion_lr_scale: float = 1.0,
        copy_logit: float = 0.0,
        frozen_embeddings: bool = False,
    ):
        super().__init__()
        check_window(window)
        if next_frame_samples is not None and (
            isinstance(next_frame_samples, bool)
            or not isinstance(next_frame_samples, int)
            or next_frame_samples < 1
        ):
            raise ValueError(f"next_frame_samples must be None or an int >= 1, got {next_frame_samples!r}")
        if not 1 <= context_prediction_horizon <= sequence_length:
            raise ValueError(
                f"context_prediction_horizon must be in [1, sequence_length={sequence_length}], "
                f"got {context_prediction_horizon}"
            )
        if (
            isinstance(context_readout_tokens, bool)
            or not isinstance(context_readout_tokens, int)
            or context_readout_tokens < 1
        ):
            raise ValueError(f"context_readout_tokens must be an int >= 1, got {context_readout_tokens!r}")
        if context_pooling not in CONTEXT_POOLINGS:
            raise ValueError(f"context_pooling must be one of {CONTEXT_POOLINGS}, got {context_pooling!r}")
        weights = (
            ("change_weight", change_weight),
            ("contrastive_weight", contrastive_weight),
            ("recency_bias", recency_bias),
            ("spatial_attention_bias", spatial_attention_bias),
            ("latent_reconstruction_weight", latent_reconstruction_weight),
            ("local_motion_weight", local_motion_weight),
            ("copy_logit", copy_logit),
        )
        for name, weight in weights:
            if not weight >= 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        if not local_motion_lr_scale > 0:
            raise ValueError(f"local_motion_lr_scale must be > 0, got {local_motion_lr_scale}")
        horizon = local_motion_horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"local_motion_horizon must be an int >= 1, got {horizon!r}")
        if local_motion_inputs not in LOCAL_MOTION_INPUTS:
            raise ValueError(
                f"local_motion_inputs must be one of {LOCAL_MOTION_INPUTS}, got {local_motion_inputs!r}"
            )
        heads_self = num_self_attention_heads or num_cross_attention_heads
        check_decoder_channels(decoder_channels, (num_cross_attention_heads, heads_self))
        self.config = PredictorConfig(
            num_latents=num_latents,
            num_latent_channels=num_latent_channels,
            num_cross_attention_heads=num_cross_attention_heads,
            num_self_attention_layers=num_self_attention_layers,
            widening_factor=widening_factor,
            dropout=dropout,
            sequence_length=sequence_length,
            num_self_attention_heads=num_self_attention_heads,
            num_decoder_self_attention_layers=num_decoder_self_attention_layers,
            num_condition_channels=num_condition_channels,
            label_smoothing=label_smoothing,
            perceptual_weight=perceptual_weight,
            next_frame_weight=next_frame_weight,
            window=window,
            context_prediction_weight=context_prediction_weight,
            mark_changes=mark_changes,
            change_weight=change_weight,
            contrastive_weight=contrastive_weight,
            motion_attention_bias=motion_attention_bias,
            context_pooling=context_pooling,
            recency_bias=recency_bias,
            context_whitening=context_whitening,
            previous_tokens=previous_tokens,
            context_prediction_horizon=context_prediction_horizon,
            embeddings_from_codes=embeddings_from_codes,
            pixel_changes=pixel_changes,
            spatial_attention_bias=spatial_attention_bias,
            encoder_iterations=encoder_iterations,
            decoder_channels=decoder_channels,
            latent_memory=latent_memory,
            context_readout_tokens=context_readout_tokens,
            latent_reconstruction_weight=latent_reconstruction_weight,
            next_frame_samples=next_frame_samples,
            local_motion_frames=local_motion_frames,
            local_motion_weight=local_motion_weight,
            local_motion_context=local_motion_context,
            local_motion_horizon=local_motion_horizon,
            local_motion_inputs=local_motion_inputs,
            local_motion_history=local_motion_history,
            local_motion_lr_scale=local_motion_lr_scale,
            copy_logit=copy_logit,
            frozen_embeddings=frozen_embeddings,
        )
        d = num_latent_channels
        self.tokenizer = tokenizer
        self.input_adapter = TokenInputAdapter(tokenizer.num_codes, tokenizer.num_quantizers, d)
        # frozen_embeddings: what every cell is read as stays as drawn (see PredictorConfig.frozen_embeddings)
        self.input_adapter.requires_grad_(not frozen_embeddings)
        # rows UNCHANGED / CHANGED / FIRST; about the norm of the grid position encoding, so the mark is seen
        self.change_embedding = nn.Parameter(torch.randn(3, d) * 0.3) if mark_changes else None
        # the embedding of a cell's previous tokens → what is added to its key's input (previous_tokens)
        self.previous_proj = nn.Linear(d, d, bias=False) if previous_tokens else None
        # local_motion_frames (None: off): each cell's motion over the last token steps → what is added to its key's
        # input; the term's head maps a cell's features to one vector per 3×3 neighbour, scored against the codes
        self.local_motion = self.local_motion_keys = None
        self.local_motion_spread = self.local_motion_head = None
        if local_motion_frames:
            self.local_motion = self._local_motion_encoder(
                tokenizer, local_motion_frames, local_motion_inputs, d
            )
            features = self.local_motion.out_channels
            self.local_motion_keys = self._local_motion_key_map(features, d)
            # one block of 9 neighbours per step ahead (local_motion_horizon)
            self.local_motion_spread = nn.Linear(features, local_motion_horizon * NEIGHBOURS * features)
            self.local_motion_head = TiedTokenOutputAdapter(self.input_adapter, in_channels=features)
            # the optimiser trains the encoder and its term's head at lr · local_motion_lr_scale
            # (training.optim.make_optimizer); the head's code table is the input adapter's, not scaled
            if local_motion_lr_scale != 1.0:
                for module in (self.local_motion, self.local_motion_spread, self.local_motion_head):
                    module.lr_scale = local_motion_lr_scale
        # local_motion_context: the motion features of all cells side by side [h · w · C] → a slot [D] the pooled
        # context adds (the last of the latents encode_tokens returns)
        self.local_motion_context = (
            self._local_motion_context_map(tokenizer, local_motion_frames, d)
            if local_motion_context
            else None
        )
        # a cell's signed difference patch [C · p · p] → what is added to its key's input (pixel_changes)
        self.change_proj = self._change_projection(tokenizer, d) if pixel_changes else None
        # cross-attention score bonus [heads, 3] per mark (UNCHANGED / CHANGED / FIRST); learned from this start
        self.motion_bias = (
            nn.Parameter(initial_motion_bias(num_cross_attention_heads, motion_attention_bias))
            if motion_attention_bias
            else None
        )
        # cross-attention score penalty per squared distance of a key's cell from a latent's home [heads], and the
        # homes (row, column in [-1, 1]); learned from this start
        self.spatial_slope = (
            nn.Parameter(initial_spatial_slope(num_cross_attention_heads, spatial_attention_bias))
            if spatial_attention_bias
            else None
        )
        # flat [N · 2] (row, column of each latent): optimisers decay matrices only, and decay would pull every home
        # to the centre of the grid
        self.latent_homes = (
            nn.Parameter(latent_homes(num_latents).flatten()) if spatial_attention_bias else None
        )
        # cross-attention score penalty per frame of a key's age [heads]; learned from this start
        self.recency_slope = (
            nn.Parameter(initial_recency_slope(num_cross_attention_heads, recency_bias))
            if recency_bias
            else None
        )
        self.encoder = PerceiverEncoder(
            num_latents,
            d,
            d,
            num_cross_attention_heads,
            heads_self,
            num_self_attention_layers,
            widening_factor,
            dropout,
            encoder_iterations,
            latent_memory,
        )
        # "projection": one linear map of the N latents side by side (latent i keeps its own weights) → D
        self.context_projection = nn.Linear(num_latents * d, d) if context_pooling == "projection" else None
        self.context_norm = nn.LayerNorm(d)
        self.timescales = nn.ModuleDict(
            {
                name: TimescaleSummary(d, heads_self, widening_factor, dropout, span)
                for name, span in TIMESCALES.items()
                if span is not None
            }
        )
        # per timescale, the decorrelating map applied to the contexts handed out (fitted while training)
        self.whitening = (
            nn.ModuleDict({name: ContextWhitening(d) for name in TIMESCALES}) if context_whitening else None
        )
        self.condition_proj = nn.Linear(num_condition_channels or d, d)
        self.offset_embedding = nn.Parameter(torch.randn(sequence_length, d) * 0.02)
        self.last_frame_proj = nn.Linear(d, d)
        # copy_logit: the logit bonus of each cell's last observed token, one per code head (None: no bonus)
        self.copy_logit = (
            nn.Parameter(torch.full((tokenizer.num_quantizers,), float(copy_logit)))
            if copy_logit > 0
            else None
        )
        dc = decoder_channels or d
        # a narrower decoder takes its queries in at its own width (None at the latents' width)
        self.decoder_in = nn.Linear(d, dc) if dc != d else None
        self.decoder = PerceiverDecoder(
            dc,
            num_cross_attention_heads,
            heads_self,
            num_decoder_self_attention_layers,
            widening_factor,
            dropout,
            num_kv_channels=d,
        )
        self.output_adapter = TiedTokenOutputAdapter(self.input_adapter, in_channels=dc)
        # the context-prediction term's map of a context [D] to its decoder's memory tokens [k, D] (None: k = 1,
        # the context itself)
        self.context_readout = (
            nn.Linear(d, context_readout_tokens * d) if context_readout_tokens > 1 else None
        )
        # the latent-reconstruction term's map of a context [D] to the N latents side by side [N · D] (only when on)
        # (no bias: the term scores the latents' deviations from their batch mean; zero at the start, so the term
        # starts at 1 and pulls the pooling only as far as the map learns to read it)
        self.latent_readout = (
            nn.Linear(d, num_latents * d, bias=False) if latent_reconstruction_weight > 0 else None
        )
        if self.latent_readout is not None:
            nn.init.zeros_(self.latent_readout.weight)
        # the contrastive term's map from a context to the token-embedding space (only when it is on)
        self.contrastive_proj = nn.Linear(d, d) if contrastive_weight > 0 else None

    @staticmethod
    def _local_motion_encoder(
        tokenizer: VQPTTokenizer, frames: int, inputs: str, channels: int
    ) -> LocalMotionEncoder:
        """The local motion encoder of ``frames`` token steps over code embeddings of ``channels`` or, with
        ``inputs="pixels"``, over cell patches (and their known flags)."""
        if inputs == "codes":
            return LocalMotionEncoder(channels, frames)
        patch = tokenizer.config.in_channels * tokenizer.downsample**2
        return LocalMotionEncoder(patch + 1, frames, normalize=False)

    @staticmethod
    def _local_motion_key_map(features: int, channels: int) -> nn.Linear:
        """The ``local_motion_frames`` map of a cell's motion features to ``channels``: entries N(0, 0.02²) like the
        code embeddings, zero bias, so the codes and the grid position lead the keys at the start and the motion
        enters as it is learned (at PyTorch's default scale it swamped them: Catch's ball y 0.929 → 0.892, CartPole's
        positions −0.03; at this one 0.924, and the CartPole model kept them)."""
        key_map = nn.Linear(features, channels)
        nn.init.normal_(key_map.weight, std=0.02)
        nn.init.zeros_(key_map.bias)
        return key_map

    def _local_motion_context_map(self, tokenizer: VQPTTokenizer, frames: int, channels: int) -> nn.Linear:
        """The ``local_motion_context`` map ``[h · w · C] → [D]``; ``ValueError`` where it cannot be built."""
        if not frames:
            raise ValueError("local_motion_context needs local_motion_frames >= 2 (the features it pools)")
        if tokenizer.frame_size is None:
            raise ValueError(
                "local_motion_context needs a tokenizer with a frame_size (the map is the token grid's)"
            )
        if tokenizer.temporal_factor != 1:
            raise ValueError(
                f"local_motion_context reads one token step per frame; this tokenizer has temporal_downsample "
                f"{tokenizer.temporal_factor}"
            )
        height, width = tokenizer.token_grid(*tokenizer.frame_size)
        context_map = nn.Linear(height * width * self.local_motion.out_channels, channels)
        # zero at the start: the latents' pooled context leads, and the motion enters as the context's terms ask for it
        nn.init.zeros_(context_map.weight)
        nn.init.zeros_(context_map.bias)
        return context_map

    @staticmethod
    def _change_projection(tokenizer: VQPTTokenizer, channels: int) -> nn.Linear:
        """The ``pixel_changes`` map of a cell's difference patch to ``channels``: entries N(0, 0.02²) like the
        code embeddings, zero bias (a cell where nothing changed gets nothing)."""
        patch = tokenizer.config.in_channels * tokenizer.downsample**2
        projection = nn.Linear(patch, channels)
        nn.init.normal_(projection.weight, std=0.02)
        nn.init.zeros_(projection.bias)
        return projection

    @classmethod
    def from_config(cls, config: PredictorConfig, tokenizer: VQPTTokenizer) -> PerceiverTokenPredictor:
        """A predictor built from ``config`` (its fields are this class's arguments) on top of ``tokenizer``."""
        return cls(tokenizer, **asdict(config))

    # -- settings (read-only views of ``config``) and sizes ------------------------------------------------------

    @property
    def sequence_length(self) -> int:
        return self.config.sequence_length

    @property
    def window(self) -> int | None:
        return self.config.window

    @property
    def label_smoothing(self) -> float:
        return self.config.label_smoothing

    @property
    def perceptual_weight(self) -> float:
        return self.config.perceptual_weight

    @property
    def next_frame_weight(self) -> float:
        return self.config.next_frame_weight

    @property
    def context_prediction_weight(self) -> float:
        return self.config.context_prediction_weight

    @property
    def conditioned(self) -> bool:
        return self.config.num_condition_channels is not None

    @property
    def num_latent_channels(self) -> int:
        return self.context_norm.normalized_shape[0]

    @property
    def mark_changes(self) -> bool:
        return self.change_embedding is not None

    @property
    def uses_change_marks(self) -> bool:
        """Whether the encoder needs each token's change mark (``mark_changes`` or ``motion_attention_bias``)."""
        return self.mark_changes or self.motion_bias is not None

    @property
    def keeps_previous_tokens(self) -> bool:
        """Whether a stream must keep each row's previous tokens (change marks or ``previous_tokens``)."""
        return self.uses_change_marks or self.previous_proj is not None

    @property
    def reads_frames(self) -> bool:
        """Whether the encoder reads the pixels as well as the tokens (``motion_attention_bias``,
        ``pixel_changes`` or ``local_motion_inputs="pixels"``): such a model trains on frames, not on a token
        cache, and a stream keeps each row's previous frame."""
        return self.motion_bias is not None or self.change_proj is not None or self.local_motion_reads_pixels

    @property
    def motion_history_frames(self) -> int:
        """Frames before each training clip that only the local motion encoder reads, so that its features at the
        clip's first steps see as many steps as a stream's do: ``(k − 1) · frames_per_token_step`` with
        ``local_motion_history`` (k = ``local_motion_frames``), else 0."""
        if self.local_motion is None or not self.config.local_motion_history:
            return 0
        return (self.local_motion.frames - 1) * self.frames_per_token_step

    @property
    def local_motion_reads_pixels(self) -> bool:
        """Whether the local motion encoder reads cell patches (``local_motion_inputs="pixels"``)."""
        return self.local_motion is not None and self.config.local_motion_inputs == "pixels"

    @property
    def num_condition_channels(self) -> int:
        return self.condition_proj.in_features

    @property
    def frames_per_token_step(self) -> int:
        return self.tokenizer.temporal_factor

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the predictor itself (the tokenizer is trained separately), without the input adapter's
        with ``frozen_embeddings``."""
        frozen = ("tokenizer.", "input_adapter.") if self.config.frozen_embeddings else ("tokenizer.",)
        return [p for name, p in self.named_parameters() if not name.startswith(frozen)]

    # -- tokens → latents → context ------------------------------------------------------------------------------

    def tokenize(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, T, C, H, W]`` → tokens ``[B, T', h, w, G]`` (frozen tokenizer, no gradient)."""
        tokens = self.tokenizer.tokens(video)
        return tokens.unsqueeze(-1) if self.tokenizer.num_quantizers == 1 else tokens

    def key_time(self, num_steps: int, device: torch.device) -> torch.Tensor:
        """Frame at which each token step is complete: ``(k + 1) · frames_per_step − 1``, ``[T']``."""
        return (torch.arange(num_steps, device=device) + 1) * self.frames_per_token_step - 1

    def encode_tokens(
        self,
        tokens: torch.Tensor,
        num_frames: int,
        window: int | None = None,
        condition: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
        changes: torch.Tensor | None = None,
        local_motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens ``[B, T', h, w, G]`` → per-frame latents ``[B, T, N, D]`` (causal, within ``window`` frames;
        ``[B, T, N + 1, D]`` with ``local_motion_context``, the last slot the frame's mapped motion features).

        ``motion``: the pixel motion marks ``[B, T', h, w]`` of the frames the tokens came from
        (:meth:`motion_marks`), read by ``motion_attention_bias``; without them (tokens without frames, e.g.
        generated ones) the tokens' own changes stand in. ``changes``: the cells' pixel changes ``[B, T', h, w,
        C · p · p]`` of those frames (:meth:`pixel_changes`), read by ``pixel_changes``; without them nothing is
        added (as for cells that did not change). ``local_motion``: the tokens' :meth:`local_motion_features`
        ``[B, T', h, w, C]`` when already computed (None computes them, for a model with ``local_motion_frames``).
        """
        if local_motion is None:
            local_motion = self.local_motion_features(tokens)
        inputs = self._encoder_inputs(tokens, num_frames, window, motion, changes, local_motion)
        latents = self.encoder(**inputs, condition=self.embed_condition(condition, tokens.shape[0]))
        return self.with_motion_slot(latents, local_motion)

    def with_motion_slot(self, latents: torch.Tensor, local_motion: torch.Tensor | None) -> torch.Tensor:
        """Latents ``[..., N, D]`` and the same frames' :meth:`local_motion_features` ``[..., h, w, C]`` → ``[...,
        N + 1, D]`` with ``local_motion_context`` (the features side by side, mapped to D, as the last slot: the
        pooled context adds it); the latents unchanged otherwise."""
        if self.local_motion_context is None:
            return latents
        slot = self.local_motion_context(local_motion.flatten(-3))
        return torch.cat([latents, slot.unsqueeze(-2)], dim=-2)

    def split_motion_slot(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents of :meth:`encode_tokens` ``[..., N(+1), D]`` → the N latents ``[..., N, D]`` and the motion slot
        ``[..., D]`` (None without ``local_motion_context``)."""
        if self.local_motion_context is None:
            return latents, None
        return latents[..., :-1, :], latents[..., -1, :]

    def motion_marks(self, video: torch.Tensor) -> torch.Tensor | None:
        """Video ``[B, T, C, H, W]`` (uint8 or float in [0, 1], as :meth:`extract_context` takes it) → pixel motion
        marks ``[B, T', h, w]`` of each token step's last frame against the previous step's
        (:func:`~aime_rl.perception.modules.temporal.motion_marks`, at the tokenizer's foreground threshold); None
        without ``motion_attention_bias``."""
        if self.motion_bias is None:
            return None
        return self._motion_marks(self.tokenizer.check_video(video, "video"))

    def _motion_marks(self, video: torch.Tensor) -> torch.Tensor | None:
        """:meth:`motion_marks` of a video already checked (float in [0, 1])."""
        if self.motion_bias is None:
            return None
        return motion_marks(*self._token_step_frames(video), FOREGROUND_THRESHOLD)

    def pixel_changes(self, video: torch.Tensor) -> torch.Tensor | None:
        """Video ``[B, T, C, H, W]`` (uint8 or float in [0, 1]) → each token cell's signed pixel change of each token
        step's last frame against the previous step's, ``[B, T', h, w, C · p · p]``
        (:func:`~aime_rl.perception.modules.temporal.pixel_changes`; zero at the first step); None without
        ``pixel_changes``."""
        if self.change_proj is None:
            return None
        return self._pixel_changes(self.tokenizer.check_video(video, "video"))

    def _pixel_changes(self, video: torch.Tensor) -> torch.Tensor | None:
        """:meth:`pixel_changes` of a video already checked (float in [0, 1])."""
        if self.change_proj is None:
            return None
        return pixel_changes(*self._token_step_frames(video))

    def local_motion_features(
        self, tokens: torch.Tensor, video: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Tokens ``[B, T', h, w, G]`` → each cell's motion features ``[B, T', h, w, C]`` from its neighbourhood over
        the last ``local_motion_frames`` token steps (:class:`~aime_rl.perception.modules.local_motion.
        LocalMotionEncoder`; "unknown" before the clip's first step); None without ``local_motion_frames``.

        With ``local_motion_inputs="pixels"`` the encoder reads the cells' patches of ``video`` ``[B, T, C, H, W]``
        (float in [0, 1], the frames the tokens came from; None: the tokenizer's decoding of the tokens)."""
        if self.local_motion is None:
            return None
        steps = self.local_motion_step_inputs(tokens, video)
        frames = self.local_motion.frames
        history = step_history(steps, frames, 0)  # [B, T', k, h, w, ·], newest first
        known = history_known(steps.shape[1], frames, steps.device).expand(steps.shape[0], -1, -1)
        return self.local_motion_from_history(history, known)

    def local_motion_step_inputs(
        self, tokens: torch.Tensor, video: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the local motion encoder keeps of each token step: its tokens ``[..., T', h, w, G]`` (``"codes"``)
        or its cells ``[..., T', h, w, C · p · p]`` (``"pixels"``, :func:`~aime_rl.perception.modules.local_motion.
        pixel_motion_cells`: of ``video [..., T, C, H, W]``, the token steps' last frames; of the tokens' decoding
        without it)."""
        if not self.local_motion_reads_pixels:
            return tokens
        if video is None:
            video = self.tokenizer.decode(self._squeeze(tokens)).clamp(0, 1)
        step_frames = video[..., self.frames_per_token_step - 1 :: self.frames_per_token_step, :, :, :]
        return pixel_motion_cells(step_frames, tuple(tokens.shape[-3:-1]))

    def local_motion_from_history(self, history: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Each cell's :meth:`local_motion_step_inputs` of the last k steps ``[..., k, h, w, ·]`` (newest first)
        and which of them are known ``[..., k]`` (bool: False before the episode's or clip's first step) → its
        motion features ``[..., h, w, C]``."""
        if self.local_motion_reads_pixels:
            return self.local_motion(pixel_motion_inputs(history, known))
        unknown = ~known[..., None, None, None]
        ids = history.masked_fill(unknown, self.input_adapter.mask_id)
        return self.local_motion(self.input_adapter.embed_ids(ids))

    def _token_step_frames(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Video ``[B, T, C, H, W]`` → the last frame of each token step ``[B, T', C, H, W]`` and the token grid
        ``(h, w)``: what the pixel-derived inputs compare."""
        step = self.frames_per_token_step
        return video[:, step - 1 :: step], self.tokenizer.token_grid(*video.shape[-2:])

    def _encoder_inputs(
        self,
        tokens: torch.Tensor,
        num_frames: int,
        window: int | None,
        motion: torch.Tensor | None = None,
        changes: torch.Tensor | None = None,
        local_motion: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokens ``[B, T', h, w, G]`` (and pixel motion marks ``[B, T', h, w]``, pixel changes ``[B, T', h, w,
        C · p · p]``, or None) → the encoder's keyword
        inputs: ``inputs [B, T'·h·w, D]``, ``key_time [T'·h·w]``, ``query_time [T]``, the causal window ``mask
        [T, T'·h·w]`` and ``key_bias``: ``[B, heads, T'·h·w]`` with ``motion_attention_bias``, ``[B or 1, heads,
        T, T'·h·w]`` with ``recency_bias`` (the motion bonus plus the age penalty), None without either.
        ``local_motion``: the tokens' :meth:`local_motion_features` (None computes them when the model has any)."""
        steps, h, w = tokens.shape[1:4]
        marks = change_marks(tokens) if self.uses_change_marks else None
        previous = (
            torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1) if self.previous_proj is not None else None
        )
        if local_motion is None:
            local_motion = self.local_motion_features(tokens)
        inputs = self.embed_inputs(tokens, marks, previous, changes, local_motion)
        inputs = rearrange(inputs, "b t n d -> b (t n) d")
        key_time = repeat(self.key_time(steps, tokens.device), "t -> (t n)", n=h * w)
        query_time = torch.arange(num_frames, device=tokens.device)
        key_bias = self.key_bias(marks if motion is None else motion)
        if self.recency_slope is not None:
            age = query_time.unsqueeze(-1) - key_time.unsqueeze(0)  # [T, T'·h·w]
            recency = rearrange(self.recency_scores(age), "t h l -> 1 h t l")
            key_bias = recency if key_bias is None else key_bias.unsqueeze(2) + recency
        spatial = self.spatial_scores(h, w)
        if spatial is not None:  # per latent: [1, heads, 1, N, T'·h·w]
            spatial = repeat(spatial, "h n c -> 1 h 1 n (t c)", t=steps)
            if key_bias is not None:
                key_bias = key_bias.unsqueeze(-2) if key_bias.dim() == 4 else key_bias[:, :, None, None]
            key_bias = spatial if key_bias is None else key_bias + spatial
        return dict(
            inputs=inputs,
            key_time=key_time,
            query_time=query_time,
            mask=window_mask(query_time, key_time, window),
            key_bias=key_bias,
        )

    def spatial_scores(self, height: int, width: int) -> torch.Tensor | None:
        """The score penalty of each cell of a ``height x width`` token grid for each latent, per head: ``[heads, N,
        h · w]`` (``−slope · d²``, d the distance of the cell's centre from the latent's home); None without
        ``spatial_attention_bias``."""
        if self.spatial_slope is None:
            return None
        homes = self.latent_homes.view(-1, 2)  # [N, 2]
        centres = cell_centres(height, width, homes.device).to(homes.dtype)
        distance = (homes.unsqueeze(1) - centres.unsqueeze(0)).square().sum(-1)  # [N, h·w]
        return -self.spatial_slope[:, None, None] * distance

    def recency_scores(self, age: torch.Tensor) -> torch.Tensor:
        """Ages in frames ``[..., L]`` (int) → the score penalty of each key per head ``[..., heads, L]`` (a model
        with ``recency_bias``)."""
        return -self.recency_slope.unsqueeze(-1) * age.unsqueeze(-2).to(self.recency_slope.dtype)

    def key_bias(self, marks: torch.Tensor | None) -> torch.Tensor | None:
        """Change marks ``[B, ..., h, w]`` → the cross-attention score bonus of each token ``[B, heads, ... · h · w]``
        (None without ``motion_attention_bias``)."""
        if self.motion_bias is None:
            return None
        return rearrange(self.motion_bias[:, marks.flatten(1)], "h b l -> b h l")

    def attention_to_cells(
        self,
        tokens: torch.Tensor,
        num_frames: int,
        window: int | None = None,
        motion: torch.Tensor | None = None,
        changes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Where the latents look: tokens ``[B, T', h, w, G]`` → ``[B, T, T', h, w]``, the cross-attention weight
        that frame t's latents put on the token of step s at cell (i, j), averaged over latents and heads.

        The rest of each frame's weight (1 − the sum over ``T', h, w``) is on the null key ("nothing here");
        steps outside the causal ``window`` get 0. ``motion``: the frames' pixel motion marks ``[B, T', h, w]``
        (:meth:`motion_marks`) for a model with ``motion_attention_bias``, and ``changes`` (:meth:`pixel_changes`)
        for one with ``pixel_changes``, as in :meth:`encode_tokens`. For inspection and tests (no gradient needed).
        """
        steps, h = tokens.shape[1:3]
        inputs = self._encoder_inputs(tokens, num_frames, window, motion, changes)
        weights = self.encoder.cross_attention_weights(**inputs)
        cells = weights[..., 1:].mean(dim=(2, 3))  # drop the null key; mean over latents and heads
        return rearrange(cells, "b t (s i j) -> b t s i j", s=steps, i=h)

    def embed_inputs(
        self,
        tokens: torch.Tensor,
        marks: torch.Tensor | None,
        previous: torch.Tensor | None = None,
        changes: torch.Tensor | None = None,
        local_motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encoder inputs: tokens ``[..., h, w, G]``, change marks ``[..., h, w]`` (None without ``mark_changes``),
        each cell's tokens of the step before ``[..., h, w, G]`` (None without ``previous_tokens``; the cell's own
        tokens where there is no step before), each cell's pixel change ``[..., h, w, C · p · p]`` (read with
        ``pixel_changes``; None adds nothing) and each cell's :meth:`local_motion_features` ``[..., h, w, C']``
        (None adds nothing) → ``[..., h · w, D]``."""
        inputs = self.input_adapter(tokens)
        if self.local_motion_keys is not None and local_motion is not None:
            inputs = inputs + self.local_motion_keys(local_motion.flatten(-3, -2))
        if self.change_embedding is not None:
            inputs = inputs + self.change_embedding[marks.flatten(-2)]
        if self.previous_proj is not None:
            inputs = inputs + self.previous_proj(self.input_adapter.embed_ids(previous).flatten(-3, -2))
        if self.change_proj is not None and changes is not None:
            inputs = inputs + self.change_proj(changes.flatten(-3, -2).to(inputs.dtype))
        return inputs

    def embed_condition(self, condition: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Condition ``[B, D_cond]`` → ``[B, D]`` added to the latent queries (None passes through).

        ``ValueError`` naming ``condition`` for a model built without conditioning (``num_condition_channels``
        None), a wrong shape, or NaN/inf values.
        """
        if condition is None:
            return None
        if not self.conditioned:
            raise ValueError(
                "condition was given, but this model was built without conditioning "
                "(num_condition_channels=None); build it with num_condition_channels=<size of the condition> "
                f"to use one, got condition of shape {tuple(getattr(condition, 'shape', ()))}"
            )
        if not isinstance(condition, torch.Tensor) or condition.shape != (
            batch_size,
            self.num_condition_channels,
        ):
            raise ValueError(
                f"condition must have shape [{batch_size}, {self.num_condition_channels}], "
                f"got {tuple(getattr(condition, 'shape', ()))}"
            )
        if not bool(torch.isfinite(condition).all()):
            raise ValueError(f"condition contains NaN or inf values (shape {tuple(condition.shape)})")
        return self.condition_proj(condition.to(self.condition_proj.weight.dtype))

    def frame_context(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, N, D]`` (or ``[B, N, D]``) → context ``[B, T, D]`` (or ``[B, D]``): the mean over the
        N latents (the seed) or, with ``context_pooling="projection"``, a linear map of all N side by side; plus
        the motion slot with ``local_motion_context`` (latents ``[..., N + 1, D]``, see :meth:`encode_tokens`);
        then LayerNorm."""
        latents, slot = self.split_motion_slot(latents)
        if self.context_projection is None:
            pooled = latents.mean(-2)
        else:
            pooled = self.context_projection(latents.flatten(-2))
        return self.context_norm(pooled if slot is None else pooled + slot)

    def extract_context(
        self,
        video: torch.Tensor,
        window: int | None = None,
        condition: torch.Tensor | None = None,
        timescale: str = "fast",
    ) -> torch.Tensor:
        """Video ``[B, T, C, H, W]`` → context ``[B, T, D]``: causal, full length T, differentiable.

        ``video``: uint8 in [0, 255] or float in [0, 1] (float16/bfloat16/float64 are converted to the model's
        dtype), frames of the model's ``frame_size``; anything else raises ``ValueError`` (see
        :meth:`VQPTTokenizer.check_video`). ``window``: frames seen at each t (``t − window + 1 … t``; None = all;
        any size, nothing is allocated per window frame). ``condition``: ``[B, D_cond]``, only for a model built
        with ``num_condition_channels``. ``timescale``: "fast" (per frame), "medium" (~4-frame summary) or "slow"
        (~16-frame summary).
        """
        check_window(window)
        check_timescale(timescale)
        video = self.tokenizer.check_video(video, "video")
        tokens, motion = self.tokenize(video), self._motion_marks(video)
        latents = self.encode_tokens(
            tokens,
            video.shape[1],
            window,
            condition,
            motion,
            self._pixel_changes(video),
            self.local_motion_features(tokens, video),
        )
        return self.output_context(self.timescale_context(latents, timescale), timescale)

    def timescale_context(self, latents: torch.Tensor, timescale: str = "fast") -> torch.Tensor:
        """Latents ``[B, T, N, D]`` → the context of one timescale ``[B, T, D]`` as the model computes it (before
        :meth:`output_context`): the pooled frame context ("fast") or its medium/slow summary."""
        fast = self.frame_context(latents)
        return fast if timescale == "fast" else self.timescales[timescale](fast)

    def output_context(self, context: torch.Tensor, timescale: str = "fast") -> torch.Tensor:
        """A context of ``timescale`` ``[..., D]`` → the context handed out ``[..., D]``: whitened with
        ``context_whitening`` (:class:`~aime_rl.perception.modules.whitening.ContextWhitening`), else unchanged."""
        return context if self.whitening is None else self.whitening[timescale](context)

    def memory(self, latents: torch.Tensor) -> torch.Tensor:
        """What the decoder reads at each frame: the N latents plus the medium and slow summaries ``[B, T, N+2, D]``."""
        return self._memory_and_contexts(latents)[0]

    def timescale_contexts(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents ``[B, T, N, D]`` → the context of every timescale ``{name: [B, T, D]}`` (before
        :meth:`output_context`)."""
        fast = self.frame_context(latents)
        return {"fast": fast, **{name: summary(fast) for name, summary in self.timescales.items()}}

    def _memory_and_contexts(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`memory` and the context of every timescale ``{name: [B, T, D]}`` it was built from."""
        contexts = self.timescale_contexts(latents)
        summaries = [contexts[name].unsqueeze(2) for name in self.timescales]
        return torch.cat([self.split_motion_slot(latents)[0], *summaries], dim=2), contexts

    @torch.no_grad()
    def calibrate_whitening(
        self, clips: Iterable[torch.Tensor], window: int | None = None, *, tokens: bool = False
    ) -> int:
        """Replace the whitening statistics by those of the contexts of ``clips`` under the current weights.

        ``clips``: videos ``[B, T, C, H, W]`` (uint8 or float in [0, 1]), e.g. replay windows, or with
        ``tokens=True`` their precomputed tokens ``[B, T', h, w(, G)]`` (a token cache: nothing is tokenized again;
        ``ValueError`` for a model that reads the frames); ``window``: the frames each context sees, as the stream
        that will hand them out (``ContextObservation(window=…)``).
        Every context of every timescale counts alike (eval mode, no gradient; the mode is restored). The running
        statistics gathered while training follow weights that kept changing; these are exact for the final
        ones (Pong, exact whitening: AtariARI score 0.54 with the running statistics, 0.70 calibrated). Returns the number of
        contexts per timescale; a no-op returning 0 without ``context_whitening``.
        """
        if self.whitening is None:
            return 0
        was_training = self.training
        self.eval()
        for whitening in self.whitening.values():
            whitening.reset()
        count = 0
        try:
            for clip in clips:
                latents = self._token_latents(clip, window) if tokens else self._video_latents(clip, window)
                for name, context in self.timescale_contexts(latents).items():
                    self.whitening[name].update(context, cumulative=True)
                count += latents.shape[0] * latents.shape[1]
        finally:
            self.train(was_training)
        return count

    def _video_latents(self, clip: torch.Tensor, window: int | None) -> torch.Tensor:
        """Per-frame latents ``[B, T, N, D]`` of a video ``[B, T, C, H, W]``."""
        video = self.tokenizer.check_video(clip, "clips")
        motion, changes = self._motion_marks(video), self._pixel_changes(video)
        tokens = self.tokenize(video)
        local_motion = self.local_motion_features(tokens, video)
        return self.encode_tokens(
            tokens, video.shape[1], window, motion=motion, changes=changes, local_motion=local_motion
        )

    def _token_latents(self, clip: torch.Tensor, window: int | None) -> torch.Tensor:
        """Per-frame latents ``[B, T, N, D]`` of precomputed tokens ``[B, T', h, w(, G)]``."""
        tokens = self._cached_tokens(clip)
        return self.encode_tokens(tokens, tokens.shape[1] * self.frames_per_token_step, window)

    def update_whitening(self, contexts: dict[str, torch.Tensor]) -> None:
        """Fold the contexts of a training step ``{timescale: [B, T, D]}`` into the whitening statistics (a no-op
        without ``context_whitening``)."""
        if self.whitening is None:
            return
        for name, context in contexts.items():
            self.whitening[name].update(context)

    # -- prediction ----------------------------------------------------------------------------------------------

    def predict_logits(
        self, memory: torch.Tensor, ids: torch.Tensor, last_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """Memory ``[B, M, D]`` of the last observed frame, its tokens ``last_tokens [B, h, w, G]`` and future ids
        ``[B, F, h, w, G]`` (mask id = unknown) → logits ``[B, F, h, w, G, num_codes]`` for token steps 1…F after it.

        Each output query sees the last observed token at its own position (a "copy" prior), so the latents need
        to carry what changes — motion — rather than the whole frame; with ``copy_logit`` that token's logit also
        gets the learned bonus. ``last_tokens=None`` removes that prior: the memory alone must then carry the whole
        next frame (the context-prediction objective).
        """
        b, f, h, w = ids.shape[:4]
        if f > self.sequence_length:
            raise ValueError(f"cannot predict {f} token steps ahead; sequence_length={self.sequence_length}")
        queries = self.input_adapter(ids) + self.offset_embedding[:f].unsqueeze(1)
        if last_tokens is not None:
            last = self.last_frame_proj(self.input_adapter.embed_ids(last_tokens).flatten(1, 2))
            queries = queries + last.unsqueeze(1)
        queries = rearrange(queries, "b f n d -> b (f n) d")
        if self.decoder_in is not None:
            queries = self.decoder_in(queries)
        hidden = self.decoder(queries, memory)
        logits = rearrange(self.output_adapter(hidden), "b (f h w) g k -> b f h w g k", f=f, h=h)
        if last_tokens is None or self.copy_logit is None:
            return logits
        copy = F.one_hot(last_tokens.long(), logits.shape[-1]).to(logits.dtype) * self.copy_logit[:, None]
        return logits + copy.unsqueeze(1)  # the same bonus at every step ahead

    def forward(
        self,
        videos: torch.Tensor | None,
        num_context_frames: int = 10,
        return_dict: bool = True,
        *,
        tokens: torch.Tensor | None = None,
        reconstruct: bool = True,
        history_frames: int = 0,
    ) -> PredictorOutput | tuple:
        """Predict frames ``num_context_frames … T−1`` of ``videos [B, T, C, H, W]`` from the frames before.

        Returns a :class:`~aime_rl.perception.outputs.PredictorOutput`, read like a dict (or, with
        ``return_dict=False``, the seed's tuple ``(reconstructed, predicted_tokens, logits, loss)``):

        - ``reconstructed`` ``[B, T, C, H, W]``: context frames reconstructed, future frames decoded from the
          prediction;
        - ``predicted_tokens`` ``[B, F', h, w(, G)]`` and ``logits`` ``[B, F', h, w, G, num_codes]``
          (``F'`` future token steps);
        - ``loss`` (total), ``token_loss`` (masked CE on the future), ``next_frame_loss``,
          ``context_prediction_loss``, ``perceptual``, ``perceptual_enabled``, ``accuracy`` (on masked future
          tokens), ``mask`` (bool ``[B, F', h, w]``).

        In training mode a cosine-scheduled random share of future positions is masked (MaskGIT); in eval mode
        all of them are, so ``predicted_tokens`` is a pure prediction. ``videos=None, tokens=...`` trains from
        precomputed tokens (:meth:`forward_tokens`; through ``forward`` so that DDP averages the gradients).
        ``reconstruct=False`` skips decoding the frames (``reconstructed`` is None): a training step needs only the
        losses, and the decode is about a tenth of its forward pass. ``history_frames``: the clip's first frames
        are only the local motion encoder's history (see :attr:`motion_history_frames`); everything above is of
        the frames after them.
        """
        if tokens is not None:  # precomputed tokens (a token cache): losses only, see forward_tokens
            return self.forward_tokens(tokens, num_context_frames, history_frames=history_frames)
        video = self.tokenizer.check_video(videos, "videos")
        lead = self._check_history(video.shape[1], history_frames)
        self._check_split(video.shape[1] - history_frames, num_context_frames)
        tokens = self.tokenize(video)
        out = self._predict(tokens, num_context_frames, video, lead)
        if not reconstruct:
            return out if return_dict else out.to_tuple()
        tokens = tokens[:, lead:]
        context_steps = num_context_frames // self.frames_per_token_step
        with torch.no_grad():
            predicted = out.predicted_tokens
            predicted = predicted.unsqueeze(-1) if predicted.dim() == 4 else predicted
            out.reconstructed = self.tokenizer.decode(
                self._squeeze(torch.cat([tokens[:, :context_steps], predicted], 1))
            )
        return out if return_dict else out.to_tuple()

    def forward_tokens(
        self, tokens: torch.Tensor, num_context_frames: int, history_frames: int = 0
    ) -> PredictorOutput:
        """The training losses of :meth:`forward` from precomputed tokens ``[B, T', h, w(, G)]`` (a token cache:
        :mod:`aime_rl.training.token_cache`), without tokenizing or decoding anything.

        Returns the output of :meth:`forward` without ``reconstructed``. The perceptual term needs frames: a model
        whose LPIPS term is active raises ``ValueError`` (train it on frames).
        """
        if self.perceptual_term_active():
            raise ValueError("the perceptual (LPIPS) term needs frames: train on videos, not cached tokens")
        tokens = self._cached_tokens(tokens)
        frames = tokens.shape[1] * self.frames_per_token_step
        lead = self._check_history(frames, history_frames)
        self._check_split(frames - history_frames, num_context_frames)
        return self._predict(tokens, num_context_frames, None, lead)

    def _cached_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Precomputed tokens ``[B, T', h, w(, G)]`` checked and as int64 ``[B, T', h, w, G]``; ``ValueError`` for a
        model that also reads the frames, or tokens of another shape."""
        if self.reads_frames:
            raise ValueError(
                "motion_attention_bias, pixel_changes and local_motion_inputs='pixels' read motion from the frames: "
                "train on videos, not cached tokens"
            )
        tokens = tokens.unsqueeze(-1) if tokens.dim() == 4 else tokens
        if tokens.dim() != 5 or tokens.shape[-1] != self.tokenizer.num_quantizers:
            raise ValueError(
                f"tokens must be [B, T', h, w, {self.tokenizer.num_quantizers}], got {tuple(tokens.shape)}"
            )
        return tokens.long()

    def _predict(
        self, tokens: torch.Tensor, num_context_frames: int, video: torch.Tensor | None, lead: int = 0
    ) -> PredictorOutput:
        """Losses and predictions from tokens ``[B, T', h, w, G]`` split at ``num_context_frames`` (``video``, when
        given, for the perceptual term and the motion marks) after ``lead`` token steps that are only the local
        motion encoder's history."""
        context_steps = num_context_frames // self.frames_per_token_step
        # the local motion features of the lead-in and context steps, each with its full history where the clip
        # holds it; the lead-in's also train the motion term (their targets are the steps after them)
        lead_frames = lead * self.frames_per_token_step
        motion_video = None if video is None else video[:, : lead_frames + num_context_frames]
        all_motion = self.local_motion_features(tokens[:, : lead + context_steps], motion_video)
        motion_tokens = tokens[:, : lead + context_steps + self.config.local_motion_horizon]
        tokens, video = tokens[:, lead:], None if video is None else video[:, lead_frames:]
        local_motion = None if all_motion is None else all_motion[:, lead:]
        target = tokens[:, context_steps:]
        seen = None if video is None else video[:, :num_context_frames]
        motion = None if seen is None else self._motion_marks(seen)
        changes = None if seen is None else self._pixel_changes(seen)
        latents = self.encode_tokens(
            tokens[:, :context_steps],
            num_context_frames,
            self.window,
            motion=motion,
            changes=changes,
            local_motion=local_motion,
        )
        memory, contexts = self._memory_and_contexts(latents)
        if self.training:
            self.update_whitening(contexts)
        mask = self._future_mask(target.shape[:4], target.device)
        ids = target.masked_fill(mask.unsqueeze(-1), self.input_adapter.mask_id)
        logits = self.predict_logits(memory[:, -1], ids, tokens[:, context_steps - 1])
        changed = (target != tokens[:, context_steps - 1].unsqueeze(1)).any(-1)  # [B, F, h, w]
        token_loss = self._cross_entropy(logits[mask], target[mask], changed[mask])
        best = logits.detach().argmax(-1)
        predicted = torch.where(mask.unsqueeze(-1), best, target)
        perceptual = (
            self._perceptual(tokens[:, :context_steps], logits, video[:, num_context_frames:])
            if video is not None
            else logits.new_zeros(())
        )
        next_frame = self._next_frame_loss(memory, tokens[:, :context_steps], self.next_frame_weight)
        context_only = self.context_readout_memory(contexts["fast"])  # [B, T, k, D]: the only memory
        horizon = self.config.context_prediction_horizon
        context_prediction = self._next_frame_loss(
            context_only,
            tokens[:, : context_steps + horizon - 1],  # the later steps are targets only
            self.context_prediction_weight,
            copy_prior=False,
            horizon=horizon,
        )
        contrastive = self._contrastive_loss(contexts["fast"], tokens[:, :context_steps])
        reconstruction = self._latent_reconstruction_loss(latents)
        local = self._local_motion_loss(all_motion, motion_tokens)
        loss = (
            token_loss
            + self.next_frame_weight * next_frame
            + self.context_prediction_weight * context_prediction
            + self.config.latent_reconstruction_weight * reconstruction
            + self.config.contrastive_weight * contrastive
            + self.config.local_motion_weight * local
            + self.perceptual_weight * perceptual
        )
        with torch.no_grad():
            accuracy = (best == target)[mask].float().mean()
        return PredictorOutput(
            predicted_tokens=self._squeeze(predicted),
            logits=logits,
            loss=loss,
            token_loss=token_loss,
            next_frame_loss=next_frame,
            context_prediction_loss=context_prediction,
            contrastive_loss=contrastive,
            latent_reconstruction_loss=reconstruction,
            local_motion_loss=local,
            perceptual=perceptual,
            perceptual_enabled=self.perceptual_term_active(),
            accuracy=accuracy,
            mask=mask,
        )

    def context_readout_memory(self, context: torch.Tensor) -> torch.Tensor:
        """Contexts ``[B, T, D]`` → the context-prediction term's decoder memory ``[B, T, k, D]`` (k =
        ``context_readout_tokens``; the context itself when k is 1)."""
        if self.context_readout is None:
            return context.unsqueeze(2)
        k = self.config.context_readout_tokens
        return rearrange(self.context_readout(context), "b t (k d) -> b t k d", k=k)

    def _check_history(self, num_frames: int, history_frames: int) -> int:
        """Validate ``history_frames`` of a clip of ``num_frames``; returns them in token steps."""
        if isinstance(history_frames, bool) or not isinstance(history_frames, int) or history_frames < 0:
            raise ValueError(f"history_frames must be an int >= 0, got {history_frames!r}")
        if history_frames % self.frames_per_token_step:
            raise ValueError(
                f"history_frames must be a multiple of {self.frames_per_token_step} with temporal_downsample, "
                f"got {history_frames}"
            )
        if history_frames >= num_frames:
            raise ValueError(
                f"history_frames ({history_frames}) must leave frames of the clip ({num_frames})"
            )
        return history_frames // self.frames_per_token_step

    def _check_split(self, num_frames: int, num_context_frames: int) -> int:
        """Validate the split; returns the number of context token steps."""
        if not 1 <= num_context_frames < num_frames:
            raise ValueError(
                f"num_context_frames must be in [1, T-1] = [1, {num_frames - 1}], got {num_context_frames}"
            )
        if num_context_frames % self.frames_per_token_step:
            raise ValueError(
                f"num_context_frames must be a multiple of {self.frames_per_token_step} with temporal_downsample, "
                f"got {num_context_frames}"
            )
        return num_context_frames // self.frames_per_token_step

    def _future_mask(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Bool ``[B, F, h, w]``: all True in eval; in training a share ``cos(π/2 · u)``, u ~ U(0, 1), per sample."""
        if not self.training:
            return torch.ones(shape, dtype=torch.bool, device=device)
        b = shape[0]
        positions = math.prod(shape[1:])
        ratio = torch.cos(0.5 * math.pi * torch.rand(b, device=device))
        num_masked = (ratio * positions).ceil().clamp(1, positions)
        ranks = torch.rand(b, positions, device=device).argsort(-1).argsort(-1)
        return (ranks < num_masked.unsqueeze(-1)).view(shape)

    def _cross_entropy(
        self, logits: torch.Tensor, target: torch.Tensor, changed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:func:`~aime_rl.perception.losses.token_cross_entropy` with this model's label smoothing and
        ``change_weight``: logits ``[..., G, K]``, ids ``[..., G]``, ``changed`` bool ``[...]``."""
        weight = self.config.change_weight if changed is not None else 0.0
        return token_cross_entropy(logits, target, self.label_smoothing, changed, weight)

    def _next_frame_loss(
        self,
        memory: torch.Tensor,
        tokens: torch.Tensor,
        weight: float,
        copy_prior: bool = True,
        horizon: int = 1,
    ) -> torch.Tensor:
        """CE of token steps j … j + horizon − 1 predicted (fully masked) from the memory ``[B, T, M, D]`` of the
        frame just before step j, for every j = 1 … T' − horizon of ``tokens [B, T', h, w, G]`` whose memory is
        given (``memory`` may cover fewer steps than ``tokens``: the later ones serve as targets only) — in training
        with ``next_frame_samples`` k, for k of those j drawn per clip (:meth:`_next_frame_starts`). Zero,
        without computing anything, when ``weight`` is 0 or no step qualifies. ``copy_prior``: the decoder also
        sees the tokens of step j − 1 (see :meth:`predict_logits`)."""
        memory_steps = memory.shape[1] // self.frames_per_token_step
        last_start = min(memory_steps, tokens.shape[1] - horizon)
        if last_start < 1 or weight == 0:
            return memory.new_zeros(())
        tokens = tokens[:, : last_start + horizon]
        starts = self._next_frame_starts(tokens.shape[0], last_start, tokens.device)  # [B, j]
        rows = torch.arange(tokens.shape[0], device=tokens.device).unsqueeze(1)
        mem = rearrange(memory[rows, starts * self.frames_per_token_step - 1], "b j m d -> (b j) m d")
        windows = tokens[:, 1:].unfold(
            1, horizon, 1
        )  # [B, last_start, h, w, G, horizon]: steps s … s + horizon − 1
        target = rearrange(windows[rows, starts - 1], "b j h w g f -> (b j) f h w g")
        last = rearrange(tokens[rows, starts - 1], "b j h w g -> (b j) h w g")
        logits = self.predict_logits(
            mem, torch.full_like(target, self.input_adapter.mask_id), last if copy_prior else None
        )
        changed = (target != last.unsqueeze(1)).any(-1)  # [(B j), horizon, h, w]
        return self._cross_entropy(logits, target, changed)

    def _next_frame_starts(self, batch_size: int, num_starts: int, device: torch.device) -> torch.Tensor:
        """The token steps ``[B, j]`` (1 … ``num_starts``) the next-frame terms decode from: all of them, or in
        training, with ``next_frame_samples`` k, k of them drawn without replacement for each clip."""
        samples = self.config.next_frame_samples
        if not self.training or samples is None or samples >= num_starts:
            return torch.arange(1, num_starts + 1, device=device).expand(batch_size, -1)
        return torch.rand(batch_size, num_starts, device=device).argsort(-1)[:, :samples] + 1

    def _latent_reconstruction_loss(self, latents: torch.Tensor) -> torch.Tensor:
        """How much of the latents ``[B, T, N, D]`` a linear map of their pooled context misses: the squared error
        of the reconstructed deviations from the batch mean (over its B · T frames) over the latents' variance there
        (1: no better than their mean). The term trains the pooling and the map only: the latents are pooled
        detached (otherwise the easiest way to a small error is latents that hold less). Zero (nothing computed)
        without ``latent_reconstruction_weight``."""
        if self.latent_readout is None:
            return latents.new_zeros(())
        latents = latents.detach()
        reconstruction = self.latent_readout(self.frame_context(latents).flatten(0, 1))  # [B · T, N · D]
        target = self.split_motion_slot(latents)[0].flatten(-2).flatten(0, 1)
        target = target - target.mean(0)
        error = (reconstruction - reconstruction.mean(0) - target).square().mean()
        return error / target.square().mean().clamp_min(1e-12)

    def local_motion_logits(self, features: torch.Tensor) -> torch.Tensor:
        """:meth:`local_motion_features` of a step ``[..., h, w, C]`` → the local motion head's logits for the next
        step's tokens of each cell's 3×3 neighbourhood ``[..., h, w, 9, G, num_codes]`` (row-major, the cell
        itself at index 4; see :func:`~aime_rl.perception.modules.local_motion.neighbourhoods`)."""
        return self._local_motion_ahead_logits(features)[..., 0, :, :, :]

    def _local_motion_ahead_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``[..., h, w, C]`` → logits ``[..., h, w, H, 9, G, num_codes]`` for each of the next H =
        ``local_motion_horizon`` steps' tokens of each cell's neighbourhood."""
        per_neighbour = self.local_motion_spread(features).unflatten(
            -1, (self.config.local_motion_horizon, NEIGHBOURS, -1)
        )
        return self.local_motion_head(per_neighbour)

    def _local_motion_loss(self, features: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """CE of the tokens of step s + a in each cell's 3×3 neighbourhood (cells outside the grid left out), named
        by the cell's :meth:`local_motion_features` of step s through their own head, for s = 0 … S − 1 and a = 1 …
        ``local_motion_horizon`` (summed over a; see :meth:`local_motion_targets`). Zero (nothing computed) without
        ``local_motion_frames``."""
        if features is None:
            return self.input_adapter.embeddings.new_zeros(())
        loss = features.new_zeros(())
        for logits, following, changed in self.local_motion_targets(features, tokens):
            loss = loss + self._cross_entropy(logits, following, changed)
        return loss

    def local_motion_targets(
        self, features: torch.Tensor, tokens: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """For each step ahead a = 1 … ``local_motion_horizon`` that the clip holds: the local motion head's logits
        ``[B, S_a, M, G, K]`` for the tokens of step s + a of the M in-grid cells of every 3×3 neighbourhood, those
        tokens ``[B, S_a, M, G]``, and which of them differ from step s's ``[B, S_a, M]`` (bool); s = 0 … S_a − 1.
        ``features [B, S, h, w, C]`` (:meth:`local_motion_features`), ``tokens [B, S + H, h, w, G]`` (or fewer steps
        ahead: a step whose s + a is past the clip is left out)."""
        height, width = tokens.shape[2:4]
        # only the neighbours inside the grid are scored: which they are depends on the grid alone, so they are
        # picked by a fixed index (a boolean mask of the batch would make a GPU wait for its count every step)
        inside = inside_neighbours(height, width, tokens.device)  # [M] of h · w · 9
        now = neighbourhoods(tokens[:, : features.shape[1]]).flatten(2, 4)[:, :, inside]  # [B, S, M, G]
        horizon = self.config.local_motion_horizon
        per_neighbour = self.local_motion_spread(features).unflatten(-1, (horizon, NEIGHBOURS, -1))
        for ahead in range(1, horizon + 1):
            steps = min(features.shape[1], tokens.shape[1] - ahead)
            if steps < 1:
                return
            following = neighbourhoods(tokens[:, ahead : ahead + steps]).flatten(2, 4)[:, :, inside]
            named = per_neighbour[:, :steps, :, :, ahead - 1].flatten(2, 4)[:, :, inside]  # [B, steps, M, C]
            changed = (following != now[:, :steps]).any(-1)
            yield self.local_motion_head(named), following, changed

    def _contrastive_loss(self, context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The contrastive term (:func:`~aime_rl.perception.losses.global_local_infonce`) between the context
        ``[B, T, D]`` of the frame before token step j and the token embeddings of step j, j = 1…T'−1; zero (nothing
        computed) when ``contrastive_weight`` is 0, for B = 1 or fewer than 2 steps."""
        steps = tokens.shape[1]
        if self.contrastive_proj is None or steps < 2 or tokens.shape[0] < 2:
            return context.new_zeros(())
        frames = torch.arange(1, steps, device=tokens.device) * self.frames_per_token_step - 1
        return global_local_infonce(
            self.contrastive_proj(context[:, frames]), self.input_adapter(tokens[:, 1:])
        )

    def _perceptual(
        self, context_tokens: torch.Tensor, logits: torch.Tensor, future: torch.Tensor
    ) -> torch.Tensor:
        """LPIPS of frames decoded from soft codes (softmax-weighted code vectors) against the true future frames."""
        if not self.perceptual_term_active():
            return logits.new_zeros(())
        soft = self.tokenizer.quantizer.soft_lookup(logits.float().softmax(-1))
        hard = self.tokenizer.quantizer.lookup(context_tokens)
        latents = rearrange(torch.cat([hard, soft], dim=1), "b t h w c -> b c t h w")
        frames = self.tokenizer.decode_latents(latents)[:, -future.shape[1] :]
        return self.tokenizer.perceptual(frames.clamp(0, 1), future)

    def perceptual_term_active(self) -> bool:
        """Whether the LPIPS term is computed (checks the LPIPS weights only when ``perceptual_weight > 0``)."""
        return self.perceptual_weight > 0 and self.tokenizer.perceptual.enabled

    def _squeeze(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.squeeze(-1) if self.tokenizer.num_quantizers == 1 else tokens
