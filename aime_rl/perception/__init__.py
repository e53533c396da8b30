"""Perception: the causal VQ video tokenizer and the Perceiver IO context model."""

from .causal_perceiver import CausalPerceiverIO
from .config import CausalPerceiverConfig, PredictorConfig, TokenizerConfig
from .context_stream import ContextStream
from .outputs import PredictorOutput, TokenizerEncoding, TokenizerLoss
from .predictor import TIMESCALES, PerceiverTokenPredictor
from .presets import PRESETS, get_preset
from .tokenizer import TokenizerStream, VQPTTokenizer

__all__ = [
    "PRESETS",
    "TIMESCALES",
    "CausalPerceiverConfig",
    "CausalPerceiverIO",
    "ContextStream",
    "PerceiverTokenPredictor",
    "PredictorConfig",
    "PredictorOutput",
    "TokenizerConfig",
    "TokenizerEncoding",
    "TokenizerLoss",
    "TokenizerStream",
    "VQPTTokenizer",
    "get_preset",
]
