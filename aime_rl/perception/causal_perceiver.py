"""CausalPerceiverIO: the tokenizer and the Perceiver token predictor behind one interface.

``extract_context(video)`` is what the rest of the library consumes: one causal context vector per frame,
``[B, T, num_latent_channels]``. ``stream(batch_size, window)`` gives the same numbers online, one frame per step,
at a cost that does not grow with t.

Inputs: video ``[B, T, 3, H, W]`` (stream frames ``[B, 3, H, W]``) as uint8 in [0, 255] or float in [0, 1] —
float16/bfloat16/float64 are converted to the model's dtype — with ``(H, W) == frame_size`` (from ``video_shape``;
only the env wrappers resize). Float values outside [0, 1], other sizes, other channel counts (4 channels is not
read as RGBA or a frame stack), empty dims and NaN/inf raise ``ValueError`` naming the argument.

``from_pretrained`` checks the weights against the directory's checksum manifest, refuses NaN/inf weights and
checks ``config.json`` key by key (unknown, missing or mistyped keys raise ``ValueError`` naming the key; the flat
``config.json`` of earlier versions still loads); every constructor refuses absurd sizes (e.g.
``num_latents=10**12``) before allocating anything.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ..utils.io import CONFIG_NAME, load_module_dir, load_state_dict_strict, save_module_dir
from ..utils.validation import check_positive, check_size_estimate
from .config import CausalPerceiverConfig, config_from_json, with_arguments
from .context_stream import ContextStream
from .modules.kv_cache import check_window
from .modules.temporal import check_timescale
from .outputs import PredictorOutput, TokenizerEncoding
from .predictor import PerceiverTokenPredictor
from .presets import get_preset, resolve_preset
from .tokenizer import VQPTTokenizer, tokenizer_size_terms


def perceiver_size_terms(config: CausalPerceiverConfig) -> dict[str, int]:
    """Rough element counts of the big tensors the Perceiver part of ``config`` allocates, by config key."""
    p = config.predictor
    d = p.num_latent_channels
    # + encoder cross-attention, decoder cross-attention, timescale summaries
    blocks = p.num_self_attention_layers + p.num_decoder_self_attention_layers + 5
    return {
        "num_latents × num_latent_channels (latent array)": p.num_latents * d,
        "num_self_attention_layers, widening_factor, num_latent_channels (attention blocks)": blocks
        * d
        * d
        * (4 + 2 * p.widening_factor),
        "num_codes × num_quantizers × num_latent_channels (token embeddings)": config.tokenizer.num_quantizers
        * (config.tokenizer.num_codes + 2)
        * d,
        "sequence_length × num_latent_channels (offset embeddings)": p.sequence_length * d,
        "num_condition_channels × num_latent_channels": (p.num_condition_channels or d) * d,
    }


def check_perceiver_config(config: CausalPerceiverConfig) -> None:
    """Validate sizes before anything is allocated; ``ValueError`` names the key."""
    check_positive(dict(zip(("T", "C", "H", "W"), config.video_shape, strict=True)), "video_shape")
    p = config.predictor
    sizes = (
        "num_latents",
        "num_latent_channels",
        "num_cross_attention_heads",
        "widening_factor",
        "sequence_length",
        "num_self_attention_heads",
        "num_condition_channels",
    )
    values = {name: getattr(p, name) for name in sizes if getattr(p, name) is not None}
    values["num_self_attention_layers + 1"] = p.num_self_attention_layers + 1
    values["num_decoder_self_attention_layers + 1"] = p.num_decoder_self_attention_layers + 1
    check_positive(values, "CausalPerceiverIO")
    terms = {**perceiver_size_terms(config), **tokenizer_size_terms(config.tokenizer)}
    check_size_estimate(terms, "CausalPerceiverIO")


class CausalPerceiverIO(nn.Module):
    """Video → causal per-frame context; the seed's main interface for the VRNN and the RL wrappers.

    ``video_shape = (T, C, H, W)`` documents the clips it is trained on (C is the tokenizer's input channels,
    ``(H, W)`` its ``frame_size``). Other arguments configure the :class:`VQPTTokenizer` (``num_codes, downsample,
    code_dim, base_channels, num_quantizers, use_3d_conv, temporal_downsample, commitment_weight,
    diversity_weight, perceptual_weight``; any other tokenizer key via ``tokenizer_options``) and the
    :class:`PerceiverTokenPredictor` (the rest; ``perceptual_weight`` goes to both). ``.config`` is the nested
    :class:`~aime_rl.perception.config.CausalPerceiverConfig` they make; ``from_config(config)`` builds a model
    from one (every tokenizer and predictor key, e.g. the predictor's ``window``, not only these arguments).

    Example (online, one frame per step: see :meth:`stream`):

    >>> import torch
    >>> from aime_rl.perception import CausalPerceiverIO
    >>> model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32)).eval()
    >>> video = torch.randint(0, 256, (2, 8, 3, 32, 32), dtype=torch.uint8)  # [B, T, C, H, W]
    >>> model.extract_context(video).shape  # one context per frame: [B, T, context_dim]
    torch.Size([2, 8, 32])
    """

    def __init__(
        self,
        video_shape: tuple[int, int, int, int] = (16, 3, 64, 64),
        num_latents: int = 128,
        num_latent_channels: int = 256,
        num_codes: int = 1024,
        downsample: int = 8,
        code_dim: int = 256,
        base_channels: int = 64,
        num_quantizers: int = 4,
        use_3d_conv: bool = True,
        temporal_downsample: bool = False,
        commitment_weight: float = 0.05,
        diversity_weight: float = 0.1,
        perceptual_weight: float = 0.1,
        num_cross_attention_heads: int = 8,
        num_self_attention_heads: int = 8,
        num_self_attention_layers: int = 6,
        widening_factor: int = 4,
        dropout: float = 0.1,
        sequence_length: int = 16,
        num_condition_channels: int | None = None,
        label_smoothing: float = 0.1,
        next_frame_weight: float = 1.0,
        context_prediction_weight: float = 0.0,
        tokenizer_options: dict | None = None,
        mark_changes: bool = False,
        change_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        motion_attention_bias: float = 0.0,
        context_pooling: str = "mean",
        recency_bias: float = 0.0,
        context_whitening: bool = False,
        previous_tokens: bool = False,
        context_prediction_horizon: int = 1,
    ):
        super().__init__()
        arguments = dict(
            video_shape=video_shape,
            num_latents=num_latents,
            num_latent_channels=num_latent_channels,
            num_codes=num_codes,
            downsample=downsample,
            code_dim=code_dim,
            base_channels=base_channels,
            num_quantizers=num_quantizers,
            use_3d_conv=use_3d_conv,
            temporal_downsample=temporal_downsample,
            commitment_weight=commitment_weight,
            diversity_weight=diversity_weight,
            perceptual_weight=perceptual_weight,
            num_cross_attention_heads=num_cross_attention_heads,
            num_self_attention_heads=num_self_attention_heads,
            num_self_attention_layers=num_self_attention_layers,
            widening_factor=widening_factor,
            dropout=dropout,
            sequence_length=sequence_length,
            num_condition_channels=num_condition_channels,
            label_smoothing=label_smoothing,
            next_frame_weight=next_frame_weight,
            context_prediction_weight=context_prediction_weight,
            tokenizer_options=tokenizer_options,
            mark_changes=mark_changes,
            change_weight=change_weight,
            contrastive_weight=contrastive_weight,
            motion_attention_bias=motion_attention_bias,
            context_pooling=context_pooling,
            recency_bias=recency_bias,
            context_whitening=context_whitening,
            previous_tokens=previous_tokens,
            context_prediction_horizon=context_prediction_horizon,
        )
        self._build(with_arguments(CausalPerceiverConfig(), arguments))

    def _build(self, config: CausalPerceiverConfig) -> None:
        """Check ``config`` (sizes first, before allocating), then build the tokenizer and the predictor."""
        check_perceiver_config(config)
        self.config = config
        tokenizer = VQPTTokenizer.from_config(config.tokenizer)
        self.predictor = PerceiverTokenPredictor.from_config(config.predictor, tokenizer)

    @classmethod
    def from_config(cls, config: CausalPerceiverConfig) -> CausalPerceiverIO:
        """A model built from ``config`` (copied: the model's ``.config`` is its own)."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model._build(replace(config))
        return model

    @property
    def tokenizer(self) -> VQPTTokenizer:
        """The video tokenizer (``perceiver.tokenizer.adapt_codebook(videos)`` refreshes its codebooks)."""
        return self.predictor.tokenizer

    def init_embeddings_from_codebook(self, generator: torch.Generator | None = None) -> None:
        """Start the predictor's code embeddings at a random projection of the tokenizer's code vectors.

        Call it once, after a trained tokenizer is loaded and before the context model trains (the pipeline does
        when ``config.predictor.embeddings_from_codes`` is set); see ``TokenInputAdapter.init_from_codebook``.
        """
        self.predictor.input_adapter.init_from_codebook(self.tokenizer.codebook, generator)

    @property
    def context_dim(self) -> int:
        """Size of one context vector (``num_latent_channels``)."""
        return self.config.predictor.num_latent_channels

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` the model expects (from ``video_shape``)."""
        return tuple(self.config.video_shape[2:])

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CausalPerceiverIO:
        """Build from a preset ("tiny", "small", "paper"); keyword ``overrides`` replace preset values.

        ``frame_size=`` (an int or ``(H, W)``) or ``video_shape=`` set the clips' shape (without ``video_shape``,
        T is ``sequence_length``); any other override is an argument of this class or any tokenizer or predictor
        key by name (e.g. ``patch_size``, ``window``). An unknown one raises ``ValueError`` naming it. See
        :func:`~aime_rl.perception.presets.get_preset`. ``"seed"`` is a deprecated alias of ``"paper"`` (a
        ``DeprecationWarning``).
        """
        return cls.from_config(get_preset(resolve_preset(name, stacklevel=2), **overrides))

    # -- the seed's API ------------------------------------------------------------------------------------------

    def extract_context(
        self,
        video: torch.Tensor,
        window: int | None = None,
        condition: torch.Tensor | None = None,
        timescale: str = "fast",
    ) -> torch.Tensor:
        """Video ``[B, T, C, H, W]`` → causal context ``[B, T, num_latent_channels]`` (see the predictor)."""
        return self.predictor.extract_context(video, window=window, condition=condition, timescale=timescale)

    def encode(self, video: torch.Tensor) -> TokenizerEncoding:
        """``tokenizer.encode``: video → ``(tokens, vq_loss, perplexity)``."""
        return self.tokenizer.encode(video)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokenizer.decode``: tokens → video ``[B, T, C, H, W]``."""
        return self.tokenizer.decode(tokens)

    def forward(
        self, videos: torch.Tensor, num_context_frames: int = 10, return_dict: bool = True
    ) -> PredictorOutput | tuple:
        """The predictor's training forward (see :meth:`PerceiverTokenPredictor.forward`)."""
        return self.predictor(videos, num_context_frames=num_context_frames, return_dict=return_dict)

    def generate(self, context_video: torch.Tensor, num_frames: int, **kwargs) -> dict[str, torch.Tensor]:
        """See :meth:`PerceiverTokenPredictor.generate`."""
        return self.predictor.generate(context_video, num_frames, **kwargs)

    def stream(
        self,
        batch_size: int,
        window: int | None = 16,
        condition: torch.Tensor | None = None,
        timescale: str = "fast",
    ) -> ContextStream:
        """Online context: ``step(frames [B, C, H, W]) -> [B, D]`` equal to ``extract_context(video, window)[:, t]``.

        ``batch_size``: an integer >= 1. ``window``: None or an integer >= 1; the key/value cache grows with the
        frames seen up to the window, so a huge window costs only what the frames seen need.

        Example:

        >>> import torch
        >>> from aime_rl.perception import CausalPerceiverIO
        >>> model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32)).eval()
        >>> video = torch.randint(0, 256, (2, 8, 3, 32, 32), dtype=torch.uint8)  # [B, T, C, H, W]
        >>> stream = model.stream(batch_size=2, window=4)
        >>> online = torch.stack([stream.step(video[:, t]) for t in range(8)], dim=1)  # [B, T, D]
        >>> online.shape, torch.allclose(online, model.extract_context(video, window=4), atol=1e-4)
        (torch.Size([2, 8, 32]), True)
        """
        check_window(window)
        check_timescale(timescale)
        return ContextStream(
            self.predictor, batch_size, window=window, condition=condition, timescale=timescale
        )

    # -- save / load ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` (the nested :class:`CausalPerceiverConfig` and ``"class"``), ``model.safetensors``
        and ``manifest.json`` (the weights' SHA-256) into ``directory`` (atomically, file by file)."""
        save_module_dir(directory, self, {"class": "CausalPerceiverIO", **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> CausalPerceiverIO:
        """Load a model written by :meth:`save_pretrained` — also by versions that wrote a flat ``config.json``.

        ``ValueError`` naming the file for a missing or corrupted file, weights that fail the checksum in
        ``manifest.json`` (directories saved before manifests existed load without it) or hold NaN/inf; naming
        the key for an unknown, missing or mistyped ``config.json`` key or an absurd size (see
        :func:`~aime_rl.perception.config.config_from_json`).
        """
        config, state = load_module_dir(directory)
        if config.pop("class", None) != "CausalPerceiverIO":
            raise ValueError(
                f"{directory} does not hold a CausalPerceiverIO checkpoint (config.json 'class')"
            )
        model = cls.from_config(config_from_json(config, Path(directory) / CONFIG_NAME))
        load_state_dict_strict(model, state, directory)
        return model.to(map_location)
