"""Perception: the causal VQ video tokenizer, the Perceiver IO context model, and LoRA fine-tuning adapters."""

from .causal_perceiver import CausalPerceiverIO
from .config import CausalPerceiverConfig, PredictorConfig, TokenizerConfig
from .context_stream import ContextStream
from .modules.lora import add_lora, lora_parameters, merge_lora, remove_lora
from .outputs import PredictorOutput, TokenizerEncoding, TokenizerLoss
from .predictor import TIMESCALES, PerceiverTokenPredictor
from .presets import PRESET_ALIASES, PRESETS, get_preset
from .tokenizer import TokenizerStream, VQPTTokenizer

__all__ = [
    "PRESETS",
    "PRESET_ALIASES",
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
    "add_lora",
    "get_preset",
    "lora_parameters",
    "merge_lora",
    "remove_lora",
]
