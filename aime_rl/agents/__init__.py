"""Stable-Baselines3 glue: agent builders with defaults for context observations, evaluation, context stacking,
a features extractor for fine-tuning the perception model jointly with the policy, and callbacks that train the
perception stack from the replay store and log open-loop rollout videos."""

from .builders import ALGORITHMS, DEFAULT_HYPERPARAMETERS, make_agent, make_eval_callback, stack_contexts
from .callbacks import PerceptionTrainingCallback, RolloutVideoCallback
from .features import PerceptionFeaturesExtractor, perception_policy_kwargs

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "PerceptionFeaturesExtractor",
    "PerceptionTrainingCallback",
    "RolloutVideoCallback",
    "make_agent",
    "make_eval_callback",
    "perception_policy_kwargs",
    "stack_contexts",
]
