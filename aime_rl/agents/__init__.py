"""Stable-Baselines3 glue: agent builders with defaults for context observations, evaluation, context stacking,
and a features extractor for fine-tuning the perception model jointly with the policy."""

from .builders import ALGORITHMS, DEFAULT_HYPERPARAMETERS, make_agent, make_eval_callback, stack_contexts
from .features import PerceptionFeaturesExtractor, perception_policy_kwargs

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "PerceptionFeaturesExtractor",
    "make_agent",
    "make_eval_callback",
    "perception_policy_kwargs",
    "stack_contexts",
]
