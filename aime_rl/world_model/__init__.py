"""World model: a VRNN with a Dirichlet-process stick-breaking (DPGMM) prior, imagination, and WorldModelEnv."""

from .env import VRNNFilter, WorldModelEnv
from .imagination import (
    WorldModelRolloutCallback,
    copy_last_psnr,
    imagine,
    log_open_loop,
    open_loop_rollout,
    psnr_per_step,
)
from .mixture import (
    active_components,
    balanced_kl,
    free_nats_kl,
    gaussian_kl,
    gaussian_mixture_kl_mc,
    mixture_log_prob,
)
from .stick_breaking import (
    DPConcentration,
    gamma_kl,
    kumaraswamy_beta_kl,
    kumaraswamy_mean,
    sample_kumaraswamy,
    stick_breaking_weights,
)
from .training import OpenLoopEvaluator, infer_action_spec, train_world_model, world_model_loss
from .vrnn import VRNN, RecurrentState, StepState, VRNNConfig, symexp, symlog

__all__ = [
    "VRNN",
    "DPConcentration",
    "OpenLoopEvaluator",
    "RecurrentState",
    "StepState",
    "VRNNConfig",
    "VRNNFilter",
    "WorldModelEnv",
    "WorldModelRolloutCallback",
    "active_components",
    "balanced_kl",
    "copy_last_psnr",
    "free_nats_kl",
    "gamma_kl",
    "gaussian_kl",
    "gaussian_mixture_kl_mc",
    "imagine",
    "infer_action_spec",
    "kumaraswamy_beta_kl",
    "kumaraswamy_mean",
    "log_open_loop",
    "mixture_log_prob",
    "open_loop_rollout",
    "psnr_per_step",
    "sample_kumaraswamy",
    "stick_breaking_weights",
    "symexp",
    "symlog",
    "train_world_model",
    "world_model_loss",
]
