"""Benchmark the built-in Catch env: raw speed, and whether PPO learns it from the true state.

Prints a markdown table with

- raw steps/s of ``aime_rl/Catch-v0`` (pixels) and ``aime_rl/CatchState-v0`` (state), random actions, one process,
  through ``gym.make`` (with its TimeLimit / order / passive-checker wrappers) and for the bare ``CatchEnv``;
- mean episode return (10 balls: +1 caught, −1 missed) of PPO ``MlpPolicy`` trained 50k steps on
  ``aime_rl/CatchState-v0`` (8 envs in a ``DummyVecEnv``, seed 0), against a random policy, a "chaser" that moves
  towards the ball's current column (velocity-blind, as from a single frame), and the oracle that heads for the landing column.

Usage: ``python benchmarks/envs.py [--steps 20000] [--ppo-steps 50000] [--eval-episodes 100]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from aime_rl.envs import CatchEnv  # importing aime_rl.envs registers aime_rl/Catch-v0 and CatchState-v0

PPO_HYPERPARAMETERS = {
    "n_steps": 64,
    "batch_size": 128,
    "n_epochs": 10,
    "learning_rate": 1e-3,
    "gamma": 0.95,
    "gae_lambda": 0.95,
    "ent_coef": 0.01,
    "policy_kwargs": {"net_arch": [128, 128]},
}


def steps_per_second(env: gym.Env, num_steps: int, seed: int = 0) -> float:
    """Raw env steps per second under uniformly random actions (resets included)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(env.action_space.n, size=num_steps)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            env.reset()
    return num_steps / (time.perf_counter() - start)


def mean_return(
    env_id: str, policy: Callable[[np.ndarray, CatchEnv], int], episodes: int, seed: int = 1000
) -> tuple[float, float]:
    """Mean and standard error of the episode return of ``policy(observation, unwrapped_env) -> action``."""
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy(observation, env.unwrapped))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(len(returns)))


def train_ppo(total_steps: int, seed: int = 0):
    """PPO ``MlpPolicy`` on ``aime_rl/CatchState-v0``, 8 envs in a ``DummyVecEnv``. Returns (model, seconds)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec_env = make_vec_env("aime_rl/CatchState-v0", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", vec_env, seed=seed, device="cpu", verbose=0, **PPO_HYPERPARAMETERS)
    start = time.perf_counter()
    model.learn(total_timesteps=total_steps)
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20_000, help="random steps per speed measurement")
    parser.add_argument("--ppo-steps", type=int, default=50_000, help="PPO training steps (0 skips PPO)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="episodes per return measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("| env | wrapping | steps/s (random actions, 1 core) |")
    print("| --- | --- | ---: |")
    for env_id, obs_type in (("aime_rl/Catch-v0", "pixels"), ("aime_rl/CatchState-v0", "state")):
        made = steps_per_second(gym.make(env_id), args.steps)
        bare = steps_per_second(CatchEnv(obs_type=obs_type), args.steps)
        print(f"| `{env_id}` | `gym.make` | {made:,.0f} |")
        print(f"| `{env_id}` | bare `CatchEnv` | {bare:,.0f} |")

    episodes = args.eval_episodes
    rng = np.random.default_rng(0)
    baselines = {
        "random": lambda _, env: int(rng.integers(3)),
        "chaser (ball's current column)": lambda _, env: env.chaser_action(),
        "oracle (landing column)": lambda _, env: env.oracle_action(),
    }
    rows = [
        (name, *mean_return("aime_rl/CatchState-v0", policy, episodes)) for name, policy in baselines.items()
    ]
    if args.ppo_steps > 0:
        model, seconds = train_ppo(args.ppo_steps)

        def ppo_action(observation: np.ndarray, _: CatchEnv) -> int:
            return int(model.predict(observation, deterministic=True)[0])

        label = f"PPO MlpPolicy, {args.ppo_steps // 1000}k steps ({seconds:.0f} s train)"
        rows.append((label, *mean_return("aime_rl/CatchState-v0", ppo_action, episodes)))

    print()
    print(
        f"| policy on `aime_rl/CatchState-v0` | return ± s.e. ({episodes} episodes of 10 balls, range ±10) |"
    )
    print("| --- | ---: |")
    for name, mean, stderr in rows:
        print(f"| {name} | {mean:+.2f} ± {stderr:.2f} |")
    if args.ppo_steps > 0:
        settings = ", ".join(f"{key}={value}" for key, value in PPO_HYPERPARAMETERS.items())
        print(f"\nPPO: n_envs=8 DummyVecEnv, seed=0, {settings}; evaluated deterministically.")


if __name__ == "__main__":
    main()
