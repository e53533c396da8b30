"""Perception: the causal VQ video tokenizer and the Perceiver IO context model."""

from .causal_perceiver import CausalPerceiverConfig, CausalPerceiverIO
from .context_stream import ContextStream
from .predictor import TIMESCALES, PerceiverTokenPredictor
from .presets import PRESETS, get_preset
from .tokenizer import TokenizerConfig, TokenizerStream, VQPTTokenizer

__all__ = [
    "PRESETS",
    "TIMESCALES",
    "CausalPerceiverConfig",
    "CausalPerceiverIO",
    "ContextStream",
    "PerceiverTokenPredictor",
    "TokenizerConfig",
    "TokenizerStream",
    "VQPTTokenizer",
    "get_preset",
]
