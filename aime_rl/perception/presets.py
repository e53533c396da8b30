"""Model presets as data: ``tiny`` (tests), ``small`` (minutes on a 2-core CPU), ``seed`` (the seed's values).

Each preset has a ``tokenizer`` part (``VQPTTokenizer`` arguments) and a ``perceiver`` part (arguments of the
Perceiver blocks of ``PerceiverTokenPredictor`` / ``CausalPerceiverIO``).
"""

from __future__ import annotations

import copy

PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "tokenizer": dict(
            code_dim=32, num_codes=32, downsample=8, base_channels=16, num_quantizers=2, perceptual_weight=0.0
        ),
        "perceiver": dict(
            num_latents=8,
            num_latent_channels=32,
            num_cross_attention_heads=2,
            num_self_attention_heads=2,
            num_self_attention_layers=1,
            widening_factor=2,
            dropout=0.0,
            sequence_length=8,
        ),
    },
    "small": {
        # Per-frame 2D convs behind a 2×2 patchify stem: about 4× cheaper per frame than the seed's UNet shape,
        # so a 2-core CPU streams 8 envs at several hundred steps/s; the motion comes from the Perceiver's window.
        "tokenizer": dict(
            code_dim=64,
            num_codes=128,
            downsample=8,
            base_channels=16,
            num_quantizers=4,
            use_3d_conv=False,
            patch_size=2,
            foreground_weight=1.0,  # small moving objects (a ball) survive tokenization; see VQPTTokenizer
        ),
        "perceiver": dict(
            num_latents=16,
            num_latent_channels=256,
            num_cross_attention_heads=4,
            num_self_attention_heads=4,
            num_self_attention_layers=2,
            widening_factor=2,
            dropout=0.0,
            sequence_length=16,
        ),
    },
    "seed": {
        "tokenizer": dict(
            code_dim=256,
            num_codes=1024,
            downsample=8,
            base_channels=64,
            num_quantizers=4,
            commitment_weight=0.05,
        ),
        "perceiver": dict(
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


def get_preset(name: str) -> dict[str, dict]:
    """A deep copy of preset ``name``; unknown names raise ``ValueError`` listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
