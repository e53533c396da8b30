"""SB3 agents with defaults for context observations: ``make_agent``, ``make_eval_callback``, ``stack_contexts``.

Context observations are float32 vectors of a frozen perception model (computed by the env wrappers), so the
agents use SB3's ``MlpPolicy`` (``MultiInputPolicy`` for ``keep_frame=True`` dict observations). SB3's default
``ortho_init=True`` is kept for PPO/A2C: it only re-initialises the policy's own MLP here (the perception model
lives in the wrapper). When the perception model sits *inside* the policy instead, use
:func:`aime_rl.agents.perception_policy_kwargs`, which turns ``ortho_init`` off.

Agents run on the CPU by default (a small MLP is faster there); pass ``device="cuda"`` to override.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "check_action_space",
    "make_agent",
    "make_eval_callback",
    "stack_contexts",
]

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}

DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": dict(
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        learning_rate=3e-4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        policy_kwargs=dict(net_arch=[128, 128]),
    ),
    "a2c": dict(
        n_steps=8, learning_rate=7e-4, gamma=0.99, ent_coef=0.01, policy_kwargs=dict(net_arch=[128, 128])
    ),
    "dqn": dict(
        learning_rate=1e-4,
        buffer_size=50_000,
        learning_starts=1_000,
        batch_size=64,
        train_freq=4,
        target_update_interval=1_000,
        exploration_fraction=0.2,
        exploration_final_eps=0.05,
        policy_kwargs=dict(net_arch=[128, 128]),
    ),
    "sac": dict(
        learning_rate=3e-4,
        buffer_size=100_000,
        learning_starts=1_000,
        batch_size=256,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
}

_ACTION_SPACES: dict[str, tuple[type[spaces.Space], ...]] = {
    "dqn": (spaces.Discrete,),
    "sac": (spaces.Box,),
}


def check_action_space(algo: str, action_space: spaces.Space) -> None:
    """``ValueError`` when ``algo`` cannot act in ``action_space`` (DQN needs Discrete, SAC needs Box)."""
    required = _ACTION_SPACES.get(algo)
    if required is not None and not isinstance(action_space, required):
        names = " or ".join(space.__name__ for space in required)
        raise ValueError(f"{algo.upper()} needs a {names} action space, the env has {action_space}")


def make_agent(
    algo: str,
    env: gym.Env | VecEnv,
    policy: str | None = None,
    device: str = "cpu",
    **overrides: Any,
) -> BaseAlgorithm:
    """An SB3 agent (``"ppo" | "a2c" | "dqn" | "sac"``) on ``env`` with :data:`DEFAULT_HYPERPARAMETERS`.

    ``overrides`` replace defaults (``policy_kwargs`` is merged key by key). ``policy`` defaults to
    ``"MultiInputPolicy"`` for dict observations and ``"MlpPolicy"`` otherwise. Raises ``ValueError`` for an
    unknown algorithm or an action space it cannot handle (DQN: Discrete, SAC: Box).
    """
    name = algo.lower()
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {sorted(ALGORITHMS)}")
    check_action_space(name, env.action_space)
    hyperparameters = copy.deepcopy(DEFAULT_HYPERPARAMETERS[name])
    policy_kwargs = {**hyperparameters.pop("policy_kwargs"), **(overrides.pop("policy_kwargs", None) or {})}
    hyperparameters.update(overrides)
    if policy is None:
        policy = "MultiInputPolicy" if isinstance(env.observation_space, spaces.Dict) else "MlpPolicy"
    return ALGORITHMS[name](policy, env, policy_kwargs=policy_kwargs, device=device, **hyperparameters)


def make_eval_callback(
    eval_env: gym.Env | VecEnv,
    eval_every: int = 10_000,
    n_train_envs: int = 1,
    n_eval_episodes: int = 10,
    best_model_save_path: str | None = None,
    log_path: str | None = None,
    deterministic: bool = True,
    verbose: int = 0,
    **kwargs: Any,
) -> EvalCallback:
    """SB3 ``EvalCallback`` that evaluates every ``eval_every`` env steps summed over ``n_train_envs`` envs.

    (SB3's own ``eval_freq`` counts callback calls, one per vectorised step; it is ``eval_every // n_train_envs``.)
    ``eval_env`` must observe what the training env observes (wrap it the same way; for a training env made by
    ``normalize_observations``, pass ``normalize_observations(eval_env, training=False)``, whose statistics SB3
    copies from the training env before each evaluation). ``kwargs`` go to
    ``EvalCallback`` (e.g. ``callback_on_new_best``).
    """
    if eval_every < 1 or n_train_envs < 1:
        raise ValueError(f"eval_every and n_train_envs must be >= 1, got {eval_every} and {n_train_envs}")
    return EvalCallback(
        eval_env,
        eval_freq=max(eval_every // n_train_envs, 1),
        n_eval_episodes=n_eval_episodes,
        best_model_save_path=best_model_save_path,
        log_path=log_path,
        deterministic=deterministic,
        verbose=verbose,
        **kwargs,
    )


def stack_contexts(venv: VecEnv, k: int) -> VecFrameStack:
    """The last ``k`` contexts of each sub-env concatenated, ``[num_envs, k · context_dim]`` (oldest first).

    SB3's ``VecFrameStack`` zero-fills the history after a reset and stacks terminal observations too.
    """
    space = venv.observation_space
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"stack_contexts needs vector observations Box([D]), got {space}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return VecFrameStack(venv, n_stack=k)
