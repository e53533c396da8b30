"""CausalPerceiverIO: the tokenizer and the Perceiver token predictor behind one interface.

``extract_context(video)`` is what the rest of the library consumes: one causal context vector per frame,
``[B, T, num_latent_channels]``. ``stream(batch_size, window)`` gives the same numbers online, one frame per step,
at a cost that does not grow with t.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..utils.io import load_module_dir, load_state_dict_strict, save_module_dir
from .context_stream import ContextStream
from .modules.utilities import check_window
from .predictor import PerceiverTokenPredictor, check_timescale
from .presets import get_preset
from .tokenizer import VQPTTokenizer


@dataclass
class CausalPerceiverConfig:
    """Constructor arguments of :class:`CausalPerceiverIO` (the seed's hyperparameters are the defaults)."""

    video_shape: tuple[int, int, int, int] = (16, 3, 64, 64)
    num_latents: int = 128
    num_latent_channels: int = 256
    num_codes: int = 1024
    downsample: int = 8
    code_dim: int = 256
    base_channels: int = 64
    num_quantizers: int = 4
    use_3d_conv: bool = True
    temporal_downsample: bool = False
    commitment_weight: float = 0.05
    diversity_weight: float = 0.1
    perceptual_weight: float = 0.1
    num_cross_attention_heads: int = 8
    num_self_attention_heads: int = 8
    num_self_attention_layers: int = 6
    widening_factor: int = 4
    dropout: float = 0.1
    sequence_length: int = 16
    num_condition_channels: int | None = None
    label_smoothing: float = 0.1
    next_frame_weight: float = 1.0
    context_prediction_weight: float = 0.0
    tokenizer_options: dict = field(default_factory=dict)


class CausalPerceiverIO(nn.Module):
    """Video → causal per-frame context; the seed's main interface for the VRNN and the RL wrappers.

    ``video_shape = (T, C, H, W)`` documents the clips it is trained on (C is the tokenizer's input channels).
    Other arguments configure the :class:`VQPTTokenizer` (``num_codes, downsample, code_dim, base_channels,
    num_quantizers, use_3d_conv, temporal_downsample, commitment_weight, diversity_weight, perceptual_weight``;
    more via ``tokenizer_options``) and the :class:`PerceiverTokenPredictor` (the rest).
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
    ):
        super().__init__()
        if len(video_shape) != 4:
            raise ValueError(f"video_shape must be (T, C, H, W), got {video_shape}")
        self.config = CausalPerceiverConfig(
            video_shape=tuple(video_shape),
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
            tokenizer_options=dict(tokenizer_options or {}),
        )
        tokenizer = VQPTTokenizer(
            in_channels=video_shape[1],
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
            **self.config.tokenizer_options,
        )
        self.predictor = PerceiverTokenPredictor(
            tokenizer,
            num_latents=num_latents,
            num_latent_channels=num_latent_channels,
            num_cross_attention_heads=num_cross_attention_heads,
            num_self_attention_layers=num_self_attention_layers,
            widening_factor=widening_factor,
            dropout=dropout,
            sequence_length=sequence_length,
            num_self_attention_heads=num_self_attention_heads,
            num_condition_channels=num_condition_channels,
            label_smoothing=label_smoothing,
            perceptual_weight=perceptual_weight,
            next_frame_weight=next_frame_weight,
            context_prediction_weight=context_prediction_weight,
        )

    @property
    def tokenizer(self) -> VQPTTokenizer:
        """The video tokenizer (``perceiver.tokenizer.adapt_codebook(videos)`` refreshes its codebooks)."""
        return self.predictor.tokenizer

    @property
    def context_dim(self) -> int:
        """Size of one context vector (``num_latent_channels``)."""
        return self.config.num_latent_channels

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` the model expects (from ``video_shape``)."""
        return tuple(self.config.video_shape[2:])

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CausalPerceiverIO:
        """Build from a preset ("tiny", "small", "seed"); keyword ``overrides`` replace preset values."""
        preset = get_preset(name)
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        args = {**preset["tokenizer"], **preset["perceiver"]}
        extra_tokenizer = {k: args.pop(k) for k in list(args) if k not in allowed}
        args = {**args, **overrides}
        args["tokenizer_options"] = {**extra_tokenizer, **args.get("tokenizer_options", {})}
        args.setdefault("video_shape", (args["sequence_length"], 3, 64, 64))
        return cls(**args)

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

    def encode(self, video: torch.Tensor):
        """``tokenizer.encode``: video → ``(tokens, vq_loss, perplexity)``."""
        return self.tokenizer.encode(video)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokenizer.decode``: tokens → video ``[B, T, C, H, W]``."""
        return self.tokenizer.decode(tokens)

    def forward(self, videos: torch.Tensor, num_context_frames: int = 10, return_dict: bool = True):
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
        """Online context: ``step(frames [B, C, H, W]) -> [B, D]`` equal to ``extract_context(video, window)[:, t]``."""
        check_window(window)
        check_timescale(timescale)
        return ContextStream(
            self.predictor, batch_size, window=window, condition=condition, timescale=timescale
        )

    # -- save / load ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (atomically, file by file)."""
        save_module_dir(directory, self, {"class": "CausalPerceiverIO", **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> CausalPerceiverIO:
        """Load a model written by :meth:`save_pretrained`; a missing or corrupted file raises ``ValueError``."""
        config, state = load_module_dir(directory)
        if config.pop("class", None) != "CausalPerceiverIO":
            raise ValueError(
                f"{directory} does not hold a CausalPerceiverIO checkpoint (config.json 'class')"
            )
        config["video_shape"] = tuple(config["video_shape"])
        model = cls(**config)
        load_state_dict_strict(model, state, directory)
        return model.to(map_location)
