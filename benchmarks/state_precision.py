"""What probe R² does an agent need? PPO on Catch's true state, blurred to a given linear-probe R² per variable.

A representation that a ridge probe reads at R² r for a variable is, at best, that variable plus noise of variance
``var · (1 − r) / r``. This trains PPO (``benchmarks/pipeline.py``'s settings) on ``aime_rl/CatchState-v0`` (ball
x, ball y, ball vx, ball vy, paddle x) with independent Gaussian noise of that size added to each variable at every
step, and prints the normalised score per R² profile: (return − random) / (true-state return − random). It turns a
probe table into what the agent can make of it. (Independent noise is the hard case: a context's errors are
correlated over time, and part of them a non-linear policy reads, so a context does somewhat better than the
noise row with its R².)

    python benchmarks/state_precision.py [--r2 1,1,1,1,1 0.9,0.9,0.7,0.7,0.9 ...] [--seeds 0 1 2]
        [--steps 20000] [--quick]
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from pipeline import PPO_KWARGS, normalised, random_return
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import aime_rl  # noqa: F401  (registers the envs)
from aime_rl.pipeline import episode_returns

STATE_ENV = "aime_rl/CatchState-v0"
VARIABLES = ("ball x", "ball y", "ball vx", "ball vy", "paddle x")
#: R² profiles: the true state, twice the issue's targets' precision, the issue's probe targets, the demo's context
#: (benchmarks/README.md, fourth session of issue 13).
DEFAULT_PROFILES = ("1,1,1,1,1", "0.97,0.97,0.9,0.9,0.97", "0.9,0.9,0.7,0.7,0.9", "0.76,0.71,0.35,0.01,0.88")


def state_std(samples: int = 5000, seed: int = 0) -> np.ndarray:
    """Standard deviation ``[5]`` of each state variable under the random policy."""
    env = gym.make(STATE_ENV)
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed)
    seen = []
    for _ in range(samples):
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        seen.append(observation)
        if terminated or truncated:
            observation, _ = env.reset()
    return np.asarray(seen).std(axis=0)


def noise_scale(r2: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Noise standard deviation ``[5]`` that leaves a linear probe R² ``r2`` per variable: ``std · √((1 − r²)/r²)``.

    ``ValueError`` for an R² outside (0, 1].
    """
    if not ((r2 > 0) & (r2 <= 1)).all():
        raise ValueError(f"every R² must be in (0, 1], got {r2.tolist()}")
    return std * np.sqrt((1 - r2) / r2)


class StateNoise(gym.ObservationWrapper):
    """Adds independent Gaussian noise of standard deviation ``scale [5]`` to the state at every step."""

    def __init__(self, env: gym.Env, scale: np.ndarray):
        super().__init__(env)
        self.scale = scale

    def observation(self, observation: np.ndarray) -> np.ndarray:
        noise = self.np_random.normal(size=observation.shape) * self.scale
        return (observation + noise).astype(np.float32)


def mean_return(scale: np.ndarray, seed: int, steps: int, episodes: int, n_envs: int) -> float:
    """PPO trained for ``steps`` on the noisy state; its mean deterministic return over ``episodes``."""
    kwargs = dict(wrapper_class=StateNoise, wrapper_kwargs=dict(scale=scale))
    agent = PPO(
        "MlpPolicy", make_vec_env(STATE_ENV, n_envs=n_envs, seed=seed, **kwargs), seed=seed, **PPO_KWARGS
    )
    agent.learn(steps)
    eval_env = make_vec_env(STATE_ENV, n_envs=4, seed=seed + 1000, **kwargs)
    return float(np.mean(episode_returns(eval_env, agent, episodes, seed + 1000, progress=False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--r2", nargs="+", default=list(DEFAULT_PROFILES), help="profiles: 5 comma-separated R²"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 steps, 2 episodes, seed 0")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_episodes, args.seeds = 2_000, 2, [0]
    profiles = [np.array([float(v) for v in p.split(",")]) for p in args.r2]
    for profile in profiles:
        if profile.shape != (len(VARIABLES),):
            raise ValueError(
                f"an R² profile has one value per variable ({', '.join(VARIABLES)}), got {profile}"
            )
    std = state_std()
    results = {
        tuple(p): [
            mean_return(noise_scale(p, std), s, args.steps, args.eval_episodes, args.n_envs)
            for s in args.seeds
        ]
        for p in profiles
    }
    random = float(np.mean([random_return(args.eval_episodes, s) for s in args.seeds]))
    exact = results.get((1.0,) * len(VARIABLES))
    state = float(np.mean(exact)) if exact else None
    print(
        f"PPO on {STATE_ENV} + noise · {args.steps} steps · seeds {args.seeds} · {args.eval_episodes} episodes"
    )
    print(f"\n| probe R² ({' / '.join(VARIABLES)}) | returns per seed | mean | normalised |")
    print("|---|---|---:|---:|")
    for profile, returns in results.items():
        mean = float(np.mean(returns))
        score = f"{normalised(mean, random, state):.2f}" if state is not None else "–"
        print(
            f"| {' / '.join(f'{v:g}' for v in profile)} | {', '.join(f'{r:+.2f}' for r in returns)} | {mean:+.2f} | {score} |"
        )
    print(f"| random policy | | {random:+.2f} | 0 |")
    if state is None:
        print("\n(normalised needs the exact-state profile 1,1,1,1,1 among --r2)")


if __name__ == "__main__":
    main()
