"""VQPTTokenizer: a causal VQ-VAE for video — frames in, discrete tokens out, and back.

Tensor flow (defaults, 64×64 RGB, ``downsample=8``)::

    video [B, T, 3, 64, 64] in [0, 1]
      → causal UNet encoder         [B, code_dim, T', 8, 8]
      → multi-head VQ               tokens [B, T', 8, 8, G]  (G = num_quantizers; [B, T', 8, 8] when G = 1)
      → causal UNet decoder         [B, T, 3, 64, 64]

Tokens of frame t depend on frames ``<= t`` only (causal temporal convs, per-frame GroupNorm). With
``temporal_downsample=True``, ``T' = T / 2`` and token step k sees frames ``<= 2k + 1``.

Inputs are checked in one place (:meth:`VQPTTokenizer.check_video`, built on
:func:`aime_rl.utils.validation.as_model_video`): uint8 ``[0, 255]`` or float ``[0, 1]`` (float16/bfloat16/float64
are converted to the model's dtype), ``in_channels`` channels, and — when the tokenizer belongs to a model with a
``frame_size`` — exactly that frame size (only the env wrappers resize).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils.io import load_module_dir, load_state_dict_strict, save_module_dir
from ..utils.validation import (
    as_model_frames,
    as_model_video,
    check_batch_size,
    check_positive,
    check_size_estimate,
    config_kwargs,
    row_index,
)
from .config import TOKENIZER_ADDED_KEYS, TOKENIZER_DECODERS, TOKENIZER_ENCODERS, TokenizerConfig
from .losses import PerceptualLoss, foreground_mask, foreground_mse, static_cells, temporal_stability
from .modules.conv import SPATIAL_PADDINGS, StreamCache
from .modules.patch_decoder import PatchDecoder
from .modules.patch_encoder import PatchEncoder
from .modules.vector_quantize import VectorQuantize
from .modules.video_unet import CausalVideoDecoder, CausalVideoEncoder, num_levels_for
from .outputs import TokenizerEncoding, TokenizerLoss


def tokenizer_size_terms(config: TokenizerConfig) -> dict[str, int]:
    """Rough element counts of the big tensors ``config`` makes a tokenizer allocate, by the keys that set them.

    Codebooks (code vectors plus EMA statistics, about ``3 · num_codes · code_dim``) and the UNet's 3×3×3 convs
    (channels up to ``4 · base_channels``, two convs per residual block, encoder and decoder).
    """
    levels = num_levels_for(config.downsample, config.patch_size)
    widest = 4 * config.base_channels
    convs = 2 * (levels + 1) * (2 * config.num_res_blocks + 2)
    edges = 2 * widest * (config.code_dim + config.in_channels * config.patch_size**2)
    return {
        "num_codes × code_dim (codebooks)": 3 * config.num_codes * config.code_dim,
        "base_channels, num_res_blocks, downsample (UNet convs)": 27 * (convs * widest**2 + edges),
    }


def check_tokenizer_config(config: TokenizerConfig) -> None:
    """Raise ``ValueError`` naming the key for sizes < 1, a bad ``frame_size`` or ``padding``, or an absurdly large
    model."""
    keys = ("in_channels", "code_dim", "num_codes", "downsample", "base_channels", "num_quantizers")
    check_positive({name: getattr(config, name) for name in keys}, "VQPTTokenizer")
    check_positive({"num_res_blocks + 1": config.num_res_blocks + 1}, "VQPTTokenizer")
    num_levels_for(config.downsample, config.patch_size)
    if config.encoder not in TOKENIZER_ENCODERS:
        raise ValueError(f"encoder must be one of {TOKENIZER_ENCODERS}, got {config.encoder!r}")
    if config.decoder not in TOKENIZER_DECODERS:
        raise ValueError(f"decoder must be one of {TOKENIZER_DECODERS}, got {config.decoder!r}")
    for part in ("encoder", "decoder"):
        if getattr(config, part) == "patch" and config.temporal_downsample:
            raise ValueError(
                f'temporal_downsample needs {part}="unet" (the patch {part} works on one frame at a time)'
            )
    if config.padding not in SPATIAL_PADDINGS:
        raise ValueError(f"padding must be one of {SPATIAL_PADDINGS}, got {config.padding!r}")
    if config.frame_size is not None:
        check_positive(
            dict(zip(("frame_size[0]", "frame_size[1]"), config.frame_size, strict=True)), "VQPTTokenizer"
        )
        height, width = config.frame_size
        if height % config.downsample or width % config.downsample:
            raise ValueError(
                f"frame_size {height}x{width} must be divisible by downsample={config.downsample}"
            )
    check_size_estimate(tokenizer_size_terms(config), "VQPTTokenizer")


class VQPTTokenizer(nn.Module):
    """Causal video VQ-VAE.

    Args: one per field of :class:`TokenizerConfig` (documented there), the seed's hyperparameters as defaults.
    ``VQPTTokenizer.from_config(config)`` builds the same model from a config; ``.config`` is this model's.

    The LPIPS module is set up lazily (see :class:`PerceptualLoss`): building or loading a tokenizer never looks
    for LPIPS weights or warns about them; the first training loss with ``perceptual_weight > 0`` does.
    Absurd sizes (e.g. ``num_codes=10**12``) are refused with ``ValueError`` before anything is allocated.
    """

    def __init__(
        self,
        in_channels: int = 3,
        code_dim: int = 256,
        num_codes: int = 1024,
        downsample: int = 8,
        base_channels: int = 64,
        use_3d_conv: bool = True,
        temporal_downsample: bool = False,
        num_quantizers: int = 4,
        commitment_weight: float = 0.05,
        diversity_weight: float = 0.1,
        perceptual_weight: float = 0.1,
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        use_ema: bool = True,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_iters: int = 10,
        patch_size: int = 1,
        frame_size: tuple[int, int] | None = None,
        foreground_weight: float = 0.0,
        stability_weight: float = 0.0,
        padding: str = "zeros",
        encoder: str = "unet",
        decoder: str = "unet",
    ):
        super().__init__()
        if frame_size is not None:
            frame_size = tuple(frame_size)
            if len(frame_size) != 2:
                raise ValueError(f"frame_size must be (H, W), got {frame_size}")
        self.config = TokenizerConfig(
            in_channels=in_channels,
            code_dim=code_dim,
            num_codes=num_codes,
            downsample=downsample,
            base_channels=base_channels,
            use_3d_conv=use_3d_conv,
            temporal_downsample=temporal_downsample,
            num_quantizers=num_quantizers,
            commitment_weight=commitment_weight,
            diversity_weight=diversity_weight,
            perceptual_weight=perceptual_weight,
            num_res_blocks=num_res_blocks,
            dropout=dropout,
            use_ema=use_ema,
            ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_iters=kmeans_iters,
            patch_size=patch_size,
            frame_size=frame_size,
            foreground_weight=foreground_weight,
            stability_weight=stability_weight,
            padding=padding,
            encoder=encoder,
            decoder=decoder,
        )
        for key in ("foreground_weight", "stability_weight"):
            if not getattr(self.config, key) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self.config, key)}")
        check_tokenizer_config(self.config)
        unet = dict(
            code_dim=code_dim,
            base_channels=base_channels,
            downsample=downsample,
            use_3d_conv=use_3d_conv,
            temporal_downsample=temporal_downsample,
            num_res_blocks=num_res_blocks,
            dropout=dropout,
            patch_size=patch_size,
            padding=padding,
        )
        self.encoder = (
            PatchEncoder(in_channels, code_dim, downsample, hidden_channels=4 * code_dim)
            if encoder == "patch"
            else CausalVideoEncoder(in_channels, **unet)
        )
        self.quantizer = VectorQuantize(
            code_dim,
            num_codes,
            num_heads=num_quantizers,
            commitment_weight=commitment_weight,
            diversity_weight=diversity_weight,
            use_ema=use_ema,
            decay=ema_decay,
            kmeans_iters=kmeans_iters,
            dead_code_threshold=dead_code_threshold,
        )
        self.decoder = (
            PatchDecoder(in_channels, code_dim, downsample, hidden_channels=4 * code_dim)
            if decoder == "patch"
            else CausalVideoDecoder(in_channels, **unet)
        )
        self.perceptual = PerceptualLoss(enabled=perceptual_weight > 0, lazy=True)

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> VQPTTokenizer:
        """A tokenizer built from ``config`` (its fields are this class's arguments)."""
        return cls(**asdict(config))

    # -- properties ----------------------------------------------------------------------------------------------

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def temporal_factor(self) -> int:
        """Frames per token step: 2 with ``temporal_downsample``, else 1."""
        return 2 if self.config.temporal_downsample else 1

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of accepted frames, or None (any size divisible by ``downsample``)."""
        return self.config.frame_size

    @property
    def codebook(self) -> torch.Tensor:
        """Code vectors ``[G, num_codes, code_dim / G]``."""
        return self.quantizer.embed

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` for frames of ``height × width``."""
        return height // self.downsample, width // self.downsample

    # -- encode / decode -----------------------------------------------------------------------------------------

    def encode(self, video: torch.Tensor) -> TokenizerEncoding:
        """Video ``[B, T, C, H, W]`` (float in [0, 1] or uint8) → ``(tokens, vq_loss, perplexity)``.

        tokens: int64 ``[B, T', h, w]`` (G = 1) or ``[B, T', h, w, G]``; vq_loss: scalar (weighted commitment +
        codebook + diversity); perplexity: ``[G]`` per-head perplexity of this batch's codes (a
        :class:`~aime_rl.perception.outputs.TokenizerEncoding`, a named tuple). The codebook is not updated here
        (use :meth:`loss` for training).
        """
        features = self._encode_features(video)
        out = self.quantizer(self._flatten(features), update_codebook=False)
        return TokenizerEncoding(self._unflatten_tokens(out.indices, features), out.loss, out.perplexity)

    @torch.no_grad()
    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, T, C, H, W]`` (float in [0, 1] or uint8) → the tokens of :meth:`encode`, int64 ``[B, T', h, w]``
        (G = 1) or ``[B, T', h, w, G]``, without its losses and perplexity (no gradient): what a frozen tokenizer's
        users need, at the cost of the code distances alone (the diversity term's softmax over every code is most of
        a quantization's work)."""
        features = self._encode_features(video)
        indices = self.quantizer.quantize_indices(self._flatten(features).to(self.codebook.dtype))
        return self._unflatten_tokens(indices, features)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens as returned by :meth:`encode` → video ``[B, T, C, H, W]`` clamped to ``[0, 1]``."""
        return self.decode_latents(self.embed_tokens(tokens)).clamp(0, 1)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, T', h, w(, G)]`` → quantized latents ``[B, code_dim, T', h, w]``."""
        tokens = self._check_tokens(tokens)
        return rearrange(self.quantizer.lookup(tokens), "b t h w c -> b c t h w")

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized (or soft) latents ``[B, code_dim, T', h, w]`` → unclamped video ``[B, T, C, H, W]`` ≈ [0, 1]."""
        video = self.decoder(latents)
        return rearrange(video, "b c t h w -> b t c h w") * 0.5 + 0.5

    def forward(self, video: torch.Tensor) -> TokenizerLoss:
        """Same as :meth:`loss`."""
        return self.loss(video)

    def loss(self, video: torch.Tensor) -> TokenizerLoss:
        """Training objective on ``video [B, T, C, H, W]``; updates EMA codebooks in training mode.

        Returns a :class:`~aime_rl.perception.outputs.TokenizerLoss` (read like a dict): ``total``,
        ``reconstruction``, ``foreground`` (see :func:`foreground_mask`), ``stability``, ``commitment``,
        ``codebook``, ``diversity``, ``perceptual`` (scalars), ``perceptual_enabled`` (bool), ``perplexity`` and
        ``usage`` (``[G]``), ``tokens`` and ``reconstructed`` (``[B, T, C, H, W]``, unclamped).
        """
        video = self.check_video(video)
        features = self.encoder(self._to_model_space(video))
        out = self.quantizer(self._flatten(features))
        quantized = rearrange(out.quantized, "(b t h w) c -> b c t h w", **self._dims(features))
        reconstructed = self.decode_latents(quantized)
        reconstruction = F.mse_loss(reconstructed, video)
        foreground = (
            foreground_mse(reconstructed, video, foreground_mask(video))
            if self.config.foreground_weight > 0
            else video.new_zeros(())
        )
        stability = self._stability_term(features, video)
        perceptual = self._perceptual_term(reconstructed, video)
        total = (
            reconstruction
            + self.config.foreground_weight * foreground
            + self.config.stability_weight * stability
            + out.loss
            + self.config.perceptual_weight * perceptual
        )
        return TokenizerLoss(
            total=total,
            reconstruction=reconstruction,
            foreground=foreground,
            stability=stability,
            commitment=out.commitment,
            codebook=out.codebook,
            diversity=out.diversity,
            perceptual=perceptual,
            perceptual_enabled=self.config.perceptual_weight > 0 and self.perceptual.enabled,
            perplexity=out.perplexity,
            usage=out.usage,
            tokens=self._unflatten_tokens(out.indices, features),
            reconstructed=reconstructed,
        )

    def _stability_term(self, features: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        if not self.config.stability_weight > 0 or features.shape[2] != video.shape[1] or video.shape[1] < 2:
            return video.new_zeros(())
        return temporal_stability(features, static_cells(video, features.shape[-2:]))

    def _perceptual_term(self, reconstructed: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        if not (self.config.perceptual_weight > 0 and self.perceptual.enabled):
            return video.new_zeros(())
        return self.perceptual(reconstructed.clamp(0, 1), video)

    # -- streaming and adaptation --------------------------------------------------------------------------------

    def stream(self, batch_size: int) -> TokenizerStream:
        """An online tokenizer for ``batch_size`` (an integer >= 1) parallel streams (see :class:`TokenizerStream`)."""
        return TokenizerStream(self, batch_size)

    @torch.no_grad()
    def adapt_codebook(self, videos: torch.Tensor, iterations: int = 10) -> dict[str, torch.Tensor]:
        """Refresh the codebooks from new-domain ``videos [B, T, C, H, W]``; encoder and decoder stay unchanged.

        Returns per-head ``usage_before`` / ``usage_after`` (fraction of codes used on ``videos``).
        """
        features = self._flatten(self._encode_features(videos))
        before = self.quantizer(features, update_codebook=False).usage
        self.quantizer.adapt(features, iterations)
        after = self.quantizer(features, update_codebook=False).usage
        return {"usage_before": before, "usage_after": after}

    # -- save / load ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (weights and codebook buffers) into ``directory``."""
        save_module_dir(directory, self, {"class": "VQPTTokenizer", **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> VQPTTokenizer:
        """Load a tokenizer written by :meth:`save_pretrained`.

        Raises ``ValueError`` naming the file for a missing/corrupted file, weights that fail the manifest's
        checksum or hold NaN/inf, and naming the key for an unknown, missing or mistyped ``config.json`` key.
        """
        config, state = load_module_dir(directory)
        if config.pop("class", "VQPTTokenizer") != "VQPTTokenizer":
            raise ValueError(f"{directory} does not hold a VQPTTokenizer checkpoint")
        model = cls.from_config_json(config, Path(directory) / "config.json")
        load_state_dict_strict(model, state, directory)
        return model.to(map_location)

    @classmethod
    def from_config_json(cls, config: dict[str, Any], source: Any) -> VQPTTokenizer:
        """A fresh tokenizer of the settings in a ``config.json`` (without ``"class"``), checked key by key:
        ``ValueError`` naming ``source`` and the key for an unknown, missing or mistyped one."""
        return cls(**config_kwargs(TokenizerConfig, config, source, optional=TOKENIZER_ADDED_KEYS))

    # -- helpers -------------------------------------------------------------------------------------------------

    def _encode_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._to_model_space(self.check_video(video)))

    @staticmethod
    def _to_model_space(video: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` in [0, 1] → ``[B, C, T, H, W]`` in [-1, 1]."""
        return rearrange(video * 2 - 1, "b t c h w -> b c t h w")

    @staticmethod
    def _flatten(features: torch.Tensor) -> torch.Tensor:
        return rearrange(features, "b c t h w -> (b t h w) c")

    @staticmethod
    def _dims(features: torch.Tensor) -> dict[str, int]:
        b, _, t, h, w = features.shape
        return {"b": b, "t": t, "h": h, "w": w}

    def _unflatten_tokens(self, indices: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        tokens = rearrange(indices, "(b t h w) g -> b t h w g", **self._dims(features))
        return tokens.squeeze(-1) if self.num_quantizers == 1 else tokens

    def check_video(self, video: torch.Tensor, name: str = "video") -> torch.Tensor:
        """A model input ``[B, T, C, H, W]`` → float ``[B, T, C, H, W]`` in ``[0, 1]`` in the model's dtype.

        uint8 is divided by 255; float16/bfloat16/float64 in ``[0, 1]`` are converted. ``ValueError`` naming
        ``name`` for anything else: see :func:`~aime_rl.utils.validation.as_model_video` (rank, empty dims,
        channels, ``frame_size``, dtype, NaN/inf, values outside [0, 1]); T must be even with
        ``temporal_downsample``.
        """
        video = as_model_video(video, name, **self._input_spec())
        if video.shape[1] % self.temporal_factor:
            raise ValueError(
                f"{name} length T must be even with temporal_downsample=True, got shape {tuple(video.shape)}"
            )
        return video

    def check_frames(self, frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
        """One frame per row ``[B, C, H, W]`` → float ``[B, C, H, W]`` in ``[0, 1]``, checked like :meth:`check_video`."""
        return as_model_frames(frames, name, **self._input_spec())

    def _input_spec(self) -> dict[str, Any]:
        return {
            "channels": self.config.in_channels,
            "downsample": self.downsample,
            "frame_size": self.config.frame_size,
            "dtype": next(self.encoder.parameters()).dtype,
        }

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate ids and return them as ``[B, T', h, w, G]`` int64."""
        expected = "[B, T, h, w]" if self.num_quantizers == 1 else f"[B, T, h, w, {self.num_quantizers}]"
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(
                f"tokens must be an integer tensor {expected}, got {getattr(tokens, 'dtype', tokens)}"
            )
        rank = 4 if self.num_quantizers == 1 else 5
        if tokens.dim() != rank or (rank == 5 and tokens.shape[-1] != self.num_quantizers):
            raise ValueError(f"tokens must have shape {expected}, got shape {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.num_codes):
            raise ValueError(
                f"tokens must be ids in [0, {self.num_codes}), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        tokens = tokens.long()
        return tokens.unsqueeze(-1) if self.num_quantizers == 1 else tokens


class TokenizerStream:
    """Online tokenization, one frame per call, equal to the offline :meth:`VQPTTokenizer.encode`.

    Holds a :class:`StreamCache` with the last ``kernel_t − 1`` activations of every causal temporal conv: a step
    costs one frame of encoder work and the cache size is fixed.

    ``step(frames [B, C, H, W])`` returns the frame's tokens ``[B, h, w(, G)]``. With ``temporal_downsample``,
    only every second frame of a row completes a token step; rows that did not complete one this call hold ``-1``
    and ``last_emitted`` (bool ``[B]``) says which rows did.
    """

    def __init__(self, tokenizer: VQPTTokenizer, batch_size: int):
        batch_size = check_batch_size(batch_size)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        device = next(tokenizer.parameters()).device
        self.cache = StreamCache(batch_size, device)
        self.last_emitted = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.frame_shape: tuple[int, int] | None = None

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """One frame per row ``[B, C, H, W]`` (float in [0, 1] or uint8) → tokens ``[B, h, w(, G)]``."""
        features, emitted = self.step_features(frames)
        tok = self.tokenizer
        indices = tok.quantizer.quantize_indices(rearrange(features, "b c h w -> (b h w) c"))
        tokens = rearrange(indices, "(b h w) g -> b h w g", b=frames.shape[0], h=features.shape[-2])
        tokens = tokens.masked_fill(~emitted.view(-1, 1, 1, 1), -1)
        return tokens.squeeze(-1) if tok.num_quantizers == 1 else tokens

    def step_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame per row ``[B, C, H, W]`` → (pre-quantization features ``[B, code_dim, h, w]``, emitted ``[B]``)."""
        frames = self._check_frames(frames)
        features, emitted = self.tokenizer.encoder.step(frames * 2 - 1, self.cache)
        self.last_emitted = emitted
        return features, emitted

    def select(self, rows: torch.Tensor) -> TokenizerStream:
        """An independent stream over the chosen rows: bool mask ``[B]`` or int64 indices ``[k]`` → batch ``k``.

        It shares the tokenizer (modules and weights) and holds its own copy of the rows' conv cache and
        ``last_emitted`` ``[k]``: ``select(rows).step(frames[rows])`` gives the tokens ``[k, h, w(, G)]`` that
        ``step(frames)`` gives in those rows, and stepping it never changes this stream. Raises ``ValueError``
        naming ``rows``.
        """
        index = row_index(rows, self.batch_size, self.cache.device)
        selected = copy.copy(self)
        selected.batch_size = index.numel()
        selected.cache = self.cache.select(index)
        selected.last_emitted = self.last_emitted[index]
        return selected

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart the rows where ``mask`` (bool ``[B]``) is True (all rows when None), as in a fresh stream."""
        if mask is None:
            self.cache.reset()
            return
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.cache.device)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"mask must be bool [{self.batch_size}], got shape {tuple(mask.shape)}")
        self.cache.reset(mask)

    def _check_frames(self, frames: torch.Tensor) -> torch.Tensor:
        frames = self.tokenizer.check_frames(frames, "frames")
        if frames.shape[0] != self.batch_size:
            raise ValueError(
                f"frames must have batch size {self.batch_size} (the stream's), got shape {tuple(frames.shape)}"
            )
        if self.frame_shape is not None and self.frame_shape != tuple(frames.shape[-2:]):
            raise ValueError(f"frames must keep size {self.frame_shape}, got shape {tuple(frames.shape)}")
        self.frame_shape = tuple(frames.shape[-2:])
        return frames.to(self.cache.device)
