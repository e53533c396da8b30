"""Perception: the causal VQ video tokenizer and the Perceiver IO context model."""

from .presets import PRESETS, get_preset
from .tokenizer import TokenizerConfig, TokenizerStream, VQPTTokenizer

__all__ = ["PRESETS", "TokenizerConfig", "TokenizerStream", "VQPTTokenizer", "get_preset"]
