"""Model presets as data: ``tiny`` (tests), ``small`` (minutes on a 2-core CPU), ``paper`` (the hyperparameters of
the seed design document). ``seed``, the old name of ``paper``, still works and warns (:data:`PRESET_ALIASES`).

A preset is a partial :class:`~aime_rl.perception.config.CausalPerceiverConfig` written as the ``config.json`` it
becomes: a ``tokenizer`` section (:class:`~aime_rl.perception.config.TokenizerConfig` keys) and a ``predictor``
section (:class:`~aime_rl.perception.config.PredictorConfig` keys); keys left out take the class defaults (the
seed's values). ``perceptual_weight`` is a key of both sections. ``video_shape`` is not part of a preset: it is
``(sequence_length, 3, 64, 64)`` unless ``video_shape=`` or ``frame_size=`` says otherwise. :func:`get_preset`
checks a preset key by key, so a typo here fails loudly.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from ..utils.validation import config_kwargs
from .config import CausalPerceiverConfig, as_frame_size, with_arguments

#: Frame size ``(H, W)`` of a preset's ``video_shape`` unless ``frame_size=`` or ``video_shape=`` is given.
FRAME_SIZE = (64, 64)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "tokenizer": dict(
            code_dim=32, num_codes=32, downsample=8, base_channels=16, num_quantizers=2, perceptual_weight=0.0
        ),
        "predictor": dict(
            num_latents=8,
            num_latent_channels=32,
            num_cross_attention_heads=2,
            num_self_attention_heads=2,
            num_self_attention_layers=1,
            widening_factor=2,
            dropout=0.0,
            sequence_length=8,
            perceptual_weight=0.0,
        ),
    },
    "small": {
        # Each token cell from its own pixels and back (patch encoder and decoder, below): per frame, no convs, so a
        # 2-core CPU streams 8 envs at several hundred steps/s; the motion comes from the Perceiver's window.
        # base_channels, use_3d_conv and patch_size shape the UNet only: they apply when an override asks for
        # encoder="unet" or decoder="unet" (per-frame 2D convs behind a 2×2 patchify stem, 4× cheaper than the seed's).
        "tokenizer": dict(
            code_dim=64,
            num_codes=128,
            downsample=8,
            base_channels=16,
            num_quantizers=4,
            use_3d_conv=False,
            patch_size=2,
            # small moving objects (a ball) survive tokenization; see VQPTTokenizer. 3 rather than 1 (issue 13, 32×32
            # Catch, 600 steps at the pipeline's tokenizer_lr 3e-3: foreground PSNR 19.3 → 22.1 dB, PSNR 28.4 → 28.1)
            foreground_weight=3.0,
            # each token from its own cell's pixels: static cells keep their tokens by construction, so the
            # stability term has nothing left to do; borders replicated in the decoder (issue 13: Catch token
            # probe ball x 0.75 → 0.94, Pong context 0.290 → 0.401; benchmarks/README.md)
            encoder="patch",
            padding="replicate",
            # each cell's pixels drawn from its own code, the patch encoder's mirror (issue 13: 32×32 Catch, 600
            # steps: foreground PSNR 22.3 → 25.1 dB in half the time; benchmarks/README.md)
            decoder="patch",
            # off, not left to chance: the LPIPS term needs AlexNet weights that a fresh machine does not have, so
            # with the seed's 0.1 the same preset trained differently depending on the torch hub cache (and the
            # demo printed a warning on every run)
            perceptual_weight=0.0,
        ),
        "predictor": dict(
            num_latents=16,
            num_latent_channels=256,
            num_cross_attention_heads=4,
            num_self_attention_heads=4,
            num_self_attention_layers=2,
            widening_factor=2,
            dropout=0.0,
            sequence_length=16,
            # moving tokens get e^1 more cross-attention in half the heads, read from the pixels (issue 13:
            # Catch 64×64 ball x 0.27 → 0.55, paddle kept; Pong 0.245 → 0.282; benchmarks/README.md)
            motion_attention_bias=1.0,
            # the 16 latents side by side → the context, not their mean (issue 13: Catch 32×32 ball x
            # 0.61 → 0.74 at 8×8 tokens, 0.73 → 0.78 at 4×4; benchmarks/README.md)
            context_pooling="projection",
            # a penalty of 1 per frame of a key's age in every other head: those read the present, the others the
            # window (issue 13: Catch 32×32 ball x / y 0.74 / 0.74 → 0.88 / 0.91; benchmarks/README.md)
            recency_bias=1.0,
            # the context handed out is decorrelated (ZCA, statistics of the training steps): its state lives in
            # directions of tiny variance that gradient-trained readers barely see otherwise (issue 13: Pong
            # AtariARI score 0.39 → 0.66 with the same weights; benchmarks/README.md)
            context_whitening=True,
            # the pooled context alone also predicts the next frame (no copy of the last tokens): the seed's
            # objective gives each output query its cell's last tokens, so nothing asks the latents to keep where
            # things are, and a longer training drops it (issue 13: Catch, 3000 steps: ball x 0.56 → 0.91, vx
            # 0.04 → 0.55; at the demo's 400 steps unchanged; benchmarks/README.md). The Atari recipe turns it off:
            # on a busy screen it takes what the latents hold (aime_rl/experiments/atari.toml, forty-first session)
            context_prediction_weight=1.0,
            # the token decoder (a training head: one query per predicted token position, ≈ 85 % of a step's
            # multiply-adds at the latents' width on a 96×80 frame) 64 channels wide: the same context on Pong,
            # Freeway, Space Invaders, Breakout and Catch, and the context model trains ≈ 2× faster (issue 13,
            # benchmarks/README.md, sixteenth session)
            decoder_channels=64,
            # each frame's latents also attend to the last 2 frames' latents: with the 64-wide decoder alone a longer
            # training lost the ball again (Catch, 2000 steps: ball x 0.61; with the memory 0.86), and at the demo's
            # budget 9 agents −2.13 → −1.63, ball vx 0.49 → 0.52; Pong 0.822 → 0.819; ≈ 6 % more training time
            # (issue 13, benchmarks/README.md, eighteenth session)
            latent_memory=2,
            # embeddings_from_codes stays off here (it needs a trained tokenizer, which the pipeline has): the demo's
            # recipe turns it on (Catch ball x / y 0.896 / 0.866 → 0.918 / 0.904), the Atari recipe keeps it off
            # (Pong 0.806 → 0.792); aime_rl/experiments/*.toml, issue 13, benchmarks/README.md
            perceptual_weight=0.0,  # see the tokenizer's
        ),
    },
    "paper": {
        "tokenizer": dict(
            code_dim=256,
            num_codes=1024,
            downsample=8,
            base_channels=64,
            num_quantizers=4,
            commitment_weight=0.05,
        ),
        "predictor": dict(
            num_latents=128,
            num_latent_channels=256,
            num_cross_attention_heads=8,
            num_self_attention_heads=8,
            num_self_attention_layers=6,
            widening_factor=4,
            dropout=0.1,
            sequence_length=16,
        ),
    },
}

#: Deprecated preset names → the current name; :func:`resolve_preset` maps them and emits a ``DeprecationWarning``.
PRESET_ALIASES: dict[str, str] = {"seed": "paper"}


def resolve_preset(name: str, stacklevel: int = 2) -> str:
    """``name`` itself, or the current name of a deprecated alias (``"seed"`` → ``"paper"``, with a
    ``DeprecationWarning`` pointing ``stacklevel`` frames up). Other names are returned unchanged."""
    if name in PRESET_ALIASES:
        new = PRESET_ALIASES[name]
        warnings.warn(
            f"the {name!r} preset is now called {new!r}; {name!r} is a deprecated alias",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        return new
    return name


def get_preset(name: str, **overrides: Any) -> CausalPerceiverConfig:
    """The config of preset ``name`` (a fresh copy) with keyword ``overrides`` applied.

    ``overrides``: ``video_shape=(T, C, H, W)``; ``frame_size=`` an int or ``(H, W)`` (the frames' size; with
    ``video_shape`` as well, they must agree); ``tokenizer_options=`` and any tokenizer or predictor key by name
    (``dropout`` is the predictor's, ``perceptual_weight`` sets both; see
    :func:`~aime_rl.perception.config.with_arguments`). Without ``video_shape``, T is the predictor's
    ``sequence_length``. An unknown preset or override raises ``ValueError`` naming it. ``"seed"`` is a deprecated
    alias of ``"paper"`` (a ``DeprecationWarning``).
    """
    name = resolve_preset(name, stacklevel=2)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    sections = config_kwargs(CausalPerceiverConfig, PRESETS[name], f"preset {name!r}", require_all=False)
    preset = CausalPerceiverConfig(**sections)
    overrides = dict(overrides)
    frame_size = overrides.pop("frame_size", None)
    video_shape = overrides.pop("video_shape", None)
    config = with_arguments(preset, overrides, "override", f" for preset {name!r}")
    if video_shape is None:
        video_shape = (config.predictor.sequence_length, 3, *FRAME_SIZE)
    elif frame_size is not None and tuple(video_shape[2:]) != as_frame_size(frame_size):
        raise ValueError(f"frame_size={frame_size!r} disagrees with video_shape={tuple(video_shape)}")
    if frame_size is not None:
        video_shape = (*tuple(video_shape)[:2], *as_frame_size(frame_size))
    return replace(config, video_shape=video_shape)
