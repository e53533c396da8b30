"""Stable-Baselines3 glue: agent builders with defaults for context observations, evaluation, context stacking,
per-feature standardisation of context observations (saved as JSON), a features extractor for fine-tuning the
perception model jointly with the policy, and callbacks that train the perception stack from the replay store and
log open-loop rollout videos."""

from .builders import (
    ALGORITHMS,
    DEFAULT_HYPERPARAMETERS,
    check_action_space,
    make_agent,
    make_eval_callback,
    stack_contexts,
)
from .callbacks import PerceptionTrainingCallback, RolloutVideoCallback
from .features import PerceptionFeaturesExtractor, perception_policy_kwargs
from .normalization import NORMALIZATION_NAME, load_normalization, normalize_observations, save_normalization

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "NORMALIZATION_NAME",
    "PerceptionFeaturesExtractor",
    "PerceptionTrainingCallback",
    "RolloutVideoCallback",
    "check_action_space",
    "load_normalization",
    "make_agent",
    "make_eval_callback",
    "normalize_observations",
    "perception_policy_kwargs",
    "save_normalization",
    "stack_contexts",
]
