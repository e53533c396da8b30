"""Sample efficiency on the built-in Catch env: PPO on the learned context vs on pixels vs on the true state.

The same step budget and seeds for the three observation types, each agent with its own PPO settings: the true
state and the pixels with :data:`PPO_KWARGS` (learning rate 1e-3, the true state's best measured at 20k steps), the
context with the demo's own agent settings (:data:`CONTEXT_PPO_KWARGS`, from ``aime_rl/experiments/demo.toml``:
SB3's 3e-4, GAE λ 0.9); ``--same-settings`` gives every agent :data:`PPO_KWARGS`, the protocol before the
twenty-fourth session:

- ``context``: ``VecContextObservation`` over a perception model pre-trained on random-policy frames (``--model``,
  e.g. ``runs/demo/model`` written by ``aime-rl demo``), standardised per feature (``normalize_observations``;
  ``--raw-context`` turns that off). ``--model`` takes several models (e.g. the demo's recipe run with three seeds):
  each trains its own agents (rows ``context 0``, ``context 1``, …), and the normalised score also gets the mean
  over all of them (``context, mean of N models``) — one model's draw of the recipe is not the recipe;
- ``pixels``: SB3 ``CnnPolicy`` on 4 stacked 64×64 frames (``VecFrameStack`` + ``VecTransposeImage``);
- ``state``: ``MlpPolicy`` on ``aime_rl/CatchState-v0`` (ball x, y, vx, vy, paddle x).

Prints a markdown table of the mean evaluation return (deterministic policy, ``--eval-episodes`` episodes) per
observation type, seed and budget, with a random-policy row. Run::

    python benchmarks/pipeline.py --model runs/demo/model [runs/demo_s1/model …] [--steps 20000 50000]
        [--seeds 0 1 2] [--quick] [--raw-context] [--same-settings] [--kinds state context pixels]

``--steps`` are budgets: each agent is trained once up to the largest and evaluated at every one. After the
per-seed table comes the normalised score per budget, (return − random) / (true-state return − random), of the
means over seeds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

import aime_rl  # noqa: F401  (registers the envs)
from aime_rl.agents import normalize_observations
from aime_rl.pipeline import episode_returns
from aime_rl.pipeline.config import default_values
from aime_rl.wrappers import VecContextObservation

PPO_KWARGS = dict(
    n_steps=64, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.95, gae_lambda=0.95, ent_coef=0.01
)
CONTEXT_PPO_KWARGS = {**PPO_KWARGS, **default_values()["agent_kwargs"]}
#: Envs of each agent: the true state's and the pixels' settings were measured with 8; the context agent runs on the
#: demo's ``num_envs``, as the demo's agent does.
PPO_N_ENVS = 8
CONTEXT_N_ENVS = default_values()["num_envs"]


def make_env(kind: str, model: str | None, n_envs: int, seed: int, normalize: bool = True):
    """The vec env of one observation type."""
    if kind == "state":
        return make_vec_env("aime_rl/CatchState-v0", n_envs=n_envs, seed=seed)
    venv = make_vec_env("aime_rl/Catch-v0", n_envs=n_envs, seed=seed)
    if kind == "pixels":
        return VecTransposeImage(VecFrameStack(venv, n_stack=4))
    venv = VecContextObservation(venv, model, window=8)
    return normalize_observations(venv) if normalize else venv


def evaluate_agent(
    kind: str, model: str | None, agent: PPO, venv, seed: int, episodes: int, normalize: bool
) -> float:
    """Mean deterministic return of ``agent`` over ``episodes`` evaluation episodes (seeds ``seed + 1000``…)."""
    eval_env = make_env(kind, model, 4, seed + 1000, normalize)
    if kind == "context" and normalize:  # evaluate with the training statistics, frozen
        eval_env.obs_rms, eval_env.training = venv.obs_rms, False
    return float(np.mean(episode_returns(eval_env, agent, episodes, seed + 1000, progress=False)))


def run(
    kind: str,
    model: str | None,
    budgets: list[int],
    seed: int,
    episodes: int,
    n_envs: int | None,
    normalize: bool = True,
    same_settings: bool = False,
) -> tuple[list[float], float]:
    """Train PPO once up to the largest budget, evaluating at each of ``budgets`` (sorted env steps), on ``n_envs``
    envs (None: the agent's own, :data:`CONTEXT_N_ENVS` or :data:`PPO_N_ENVS`).

    Returns (mean evaluation return per budget, seconds including the evaluations).
    """
    start = time.time()
    demo_agent = kind == "context" and not same_settings
    n_envs = n_envs or (CONTEXT_N_ENVS if demo_agent else PPO_N_ENVS)
    venv = make_env(kind, model, n_envs, seed, normalize)
    policy = "CnnPolicy" if kind == "pixels" else "MlpPolicy"
    settings = CONTEXT_PPO_KWARGS if demo_agent else PPO_KWARGS
    agent = PPO(policy, venv, seed=seed, verbose=0, **settings)
    means = []
    for budget in budgets:
        agent.learn(budget - agent.num_timesteps, reset_num_timesteps=False)
        means.append(evaluate_agent(kind, model, agent, venv, seed, episodes, normalize))
    return means, time.time() - start


def observation_runs(kinds: list[str], models: list[str]) -> dict[str, tuple[str, str | None]]:
    """Row label → (observation kind, model directory) of every agent to train per seed: ``context`` once per
    model (``context`` alone for one model, ``context 0``, ``context 1``, … for several; none without a model)."""
    runs: dict[str, tuple[str, str | None]] = {}
    for kind in kinds:
        if kind != "context":
            runs[kind] = (kind, None)
        elif len(models) == 1:
            runs["context"] = ("context", models[0])
        else:
            runs.update({f"context {i}": ("context", model) for i, model in enumerate(models)})
    return runs


def random_return(episodes: int, seed: int) -> float:
    venv = make_env("state", None, 4, seed + 1000)
    return float(np.mean(episode_returns(venv, None, episodes, seed + 1000, progress=False)))


def normalised(value: float, random: float, state: float) -> float:
    """(return − random) / (true-state return − random): 0 is the random policy, 1 the true-state agent."""
    return (value - random) / (state - random) if state != random else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        nargs="+",
        default=[],
        help="perception model directories for the 'context' runs (several: agents on each, and their mean)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[20_000, 50_000],
        help="budgets (env steps) evaluated in one run",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kinds", nargs="+", default=["state", "context", "pixels"])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--n-envs",
        type=int,
        default=None,
        help=f"envs of every agent (default: {PPO_N_ENVS} for state and pixels, the demo's {CONTEXT_N_ENVS} for the context)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 steps, 2 episodes")
    parser.add_argument("--raw-context", action="store_true", help="do not standardise the context features")
    parser.add_argument(
        "--same-settings", action="store_true", help="the context agent with the true state's PPO settings"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_episodes = [2_000], 2
    budgets = sorted(set(args.steps))
    runs = observation_runs(args.kinds, args.model)
    for label, (_, model) in runs.items():
        if label.startswith("context "):
            print(f"{label}: {model}")
    context = PPO_KWARGS if args.same_settings else CONTEXT_PPO_KWARGS
    print(
        f"PPO on aime_rl/Catch-v0 · budgets {budgets} · seeds {args.seeds} · {args.eval_episodes} eval episodes · "
        f"learning rate {PPO_KWARGS['learning_rate']} (state, pixels), {context['learning_rate']} (context) · "
        f"GAE λ {PPO_KWARGS['gae_lambda']} (state, pixels), {context['gae_lambda']} (context)"
    )
    header = " | ".join(f"{b // 1000}k" for b in budgets)
    print(f"\n| observation | seed | {header} | seconds |\n|---|---:|{'---:|' * len(budgets)}---:|")
    results: dict[str, list[list[float]]] = {"random": []}
    for seed in args.seeds:
        rand = random_return(args.eval_episodes, seed)
        results["random"].append([rand] * len(budgets))
        print(f"| random policy | {seed} | {' | '.join(f'{rand:.2f}' for _ in budgets)} | – |", flush=True)
        for label, (kind, model) in runs.items():
            means, seconds = run(
                kind,
                model,
                budgets,
                seed,
                args.eval_episodes,
                args.n_envs,
                not args.raw_context,
                args.same_settings,
            )
            results.setdefault(label, []).append(means)
            print(
                f"| {label} | {seed} | {' | '.join(f'{m:.2f}' for m in means)} | {seconds:.0f} |", flush=True
            )
    if "state" not in results:
        return
    mean = {label: np.mean(rows, axis=0) for label, rows in results.items()}
    contexts = [label for label in runs if label.startswith("context ")]
    if contexts:  # every model's agents count alike: the recipe's score, not one draw's
        mean[f"context, mean of {len(contexts)} models"] = np.mean(
            [mean[label] for label in contexts], axis=0
        )
    print(
        f"\nnormalised score (mean over seeds; (return − random) / (state − random))\n\n| observation | {header} |"
    )
    print(f"|---|{'---:|' * len(budgets)}")
    for label in [*runs, *(key for key in mean if key.startswith("context, mean"))]:
        scores = [
            normalised(mean[label][i], mean["random"][i], mean["state"][i]) for i in range(len(budgets))
        ]
        print(f"| {label} | {' | '.join(f'{s:.2f}' for s in scores)} |")


if __name__ == "__main__":
    main()
