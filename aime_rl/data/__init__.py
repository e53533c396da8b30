"""Synthetic data for examples, tests and benchmarks (generated, never downloaded)."""

from .synthetic import moving_sprites

__all__ = ["moving_sprites"]
