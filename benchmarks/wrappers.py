"""Benchmark the context wrappers: env-steps/s of 8 Catch envs in an SB3 ``DummyVecEnv``.

Three ways to step 8 copies of ``aime_rl/Catch-v0`` (64×64 RGB, random actions, episodes of ~135 steps, so episode
ends and their terminal contexts are included):

- **raw**: the pixel envs alone (no perception);
- **per-env**: 8 :class:`ContextObservation` wrappers (one ``stream(1)`` each, one shared model) in a ``DummyVecEnv``;
- **batched**: :class:`VecContextObservation` over the raw ``DummyVecEnv``: one ``stream(8)`` step per env step;
- **model only**: ``model.stream(8).step(frames)`` on fixed frames, no env, no wrapper: the floor the perception
  model sets, so that ``batched / model only`` shows the wrappers' own overhead.

Models: the ``"small"`` and ``"paper"`` presets (``perceptual_weight=0``), random weights, window 16, eval mode,
``torch.inference_mode()``. Targets: batched ≥ 3× per-env; ``"small"`` batched ≥ 300 env-steps/s on a 2-core CPU.

The cases are measured in interleaved rounds (``--steps`` vector steps of each case per round, after a warm-up) so
that load from other processes hits them alike; the table gives the median env-steps/s over the rounds and the best
in parentheses. ``torch`` threads are left at the default unless ``--threads`` is given.

Usage: ``python benchmarks/wrappers.py [--quick] [--presets small paper] [--rounds 3] [--steps 40] [--threads N]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import aime_rl  # noqa: F401  (registers aime_rl/Catch-v0)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers import ContextObservation, VecContextObservation, env_factory

ENV_ID = "aime_rl/Catch-v0"
NUM_ENVS = 8
WINDOW = 16
BATCHED_SPEEDUP_TARGET = 3.0
SMALL_STEPS_TARGET = 300.0


def raw_venv() -> DummyVecEnv:
    return DummyVecEnv([env_factory(ENV_ID)] * NUM_ENVS)


def per_env_venv(model: CausalPerceiverIO) -> DummyVecEnv:
    return DummyVecEnv([lambda: ContextObservation(gym.make(ENV_ID), model, window=WINDOW)] * NUM_ENVS)


def batched_venv(model: CausalPerceiverIO) -> VecContextObservation:
    return VecContextObservation(raw_venv(), model, window=WINDOW)


def time_steps(venv: VecEnv, num_steps: int, rng: np.random.Generator) -> float:
    """Env-steps/s of ``num_steps`` vector steps with random actions."""
    actions = rng.integers(3, size=(num_steps, venv.num_envs))
    start = time.perf_counter()
    for action in actions:
        venv.step(action)
    return num_steps * venv.num_envs / (time.perf_counter() - start)


class ModelOnly:
    """``stream(NUM_ENVS).step`` on fixed random frames, timed like a VecEnv (env-steps/s)."""

    num_envs = NUM_ENVS

    def __init__(self, model: CausalPerceiverIO):
        self.model = model
        self.frames = torch.randint(0, 256, (NUM_ENVS, 3, *model.frame_size), dtype=torch.uint8)
        with torch.inference_mode():
            self.stream = model.stream(NUM_ENVS, window=WINDOW)

    def seed(self, seed: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def step(self, action: np.ndarray) -> None:
        with torch.inference_mode():
            self.stream.step(self.frames)

    def close(self) -> None:
        pass


def measure_preset(preset: str, rounds: int, steps: int, warmup: int) -> dict[str, list[float]]:
    """Env-steps/s per round for the raw, per-env, batched and model-only cases of one preset."""
    torch.manual_seed(0)
    model = CausalPerceiverIO.from_preset(preset, perceptual_weight=0.0).eval()
    cases = {
        "raw": raw_venv(),
        "per-env": per_env_venv(model),
        "batched": batched_venv(model),
        "model": ModelOnly(model),
    }
    rng = np.random.default_rng(0)
    for venv in cases.values():
        venv.seed(0)
        venv.reset()
        time_steps(venv, warmup, rng)
    results: dict[str, list[float]] = {name: [] for name in cases}
    cpu_seconds = time.process_time()
    for _ in range(rounds):
        for name, venv in cases.items():
            results[name].append(time_steps(venv, steps, rng))
    results["cpu_share"] = [
        (time.process_time() - cpu_seconds) / sum(steps * NUM_ENVS / v for vs in results.values() for v in vs)
    ]
    for venv in cases.values():
        venv.close()
    return results


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({max(values):,.0f})"


def print_table(results: dict[str, dict[str, list[float]]]) -> None:
    print(
        f"\n{datetime.date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs ·"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads · {NUM_ENVS} envs, window {WINDOW}\n"
    )
    print(
        "| preset | raw env | 8 × ContextObservation | VecContextObservation (batched) | model only "
        "| batched / per-env | batched / model only | CPU share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for preset, cases in results.items():
        speedup = statistics.median(cases["batched"]) / statistics.median(cases["per-env"])
        overhead = statistics.median(cases["batched"]) / statistics.median(cases["model"])
        print(
            f"| {preset} | {summary(cases['raw'])} | {summary(cases['per-env'])} | {summary(cases['batched'])} "
            f"| {summary(cases['model'])} | {speedup:.1f}× | {overhead:.2f} | {cases['cpu_share'][0]:.2f} |"
        )
    print(
        "\nenv-steps/s, median over rounds (best). CPU share: CPU seconds this process got per wall second "
        "while measuring (below the thread count when other jobs load the machine)."
    )
    for preset, cases in results.items():
        speedup = statistics.median(cases["batched"]) / statistics.median(cases["per-env"])
        met = "met" if speedup >= BATCHED_SPEEDUP_TARGET else "NOT met"
        print(f"- {preset}: batched ≥ {BATCHED_SPEEDUP_TARGET:.0f}× per-env: {met} ({speedup:.1f}×)")
        if preset == "small":
            batched = statistics.median(cases["batched"])
            met = "met" if batched >= SMALL_STEPS_TARGET else "NOT met"
            print(f"- small: batched ≥ {SMALL_STEPS_TARGET:.0f} env-steps/s: {met} ({batched:,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 8 steps (a smoke run)")
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="vector steps per case and round")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 8, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        preset: measure_preset(preset, args.rounds, args.steps, args.warmup) for preset in args.presets
    }
    print_table(results)


if __name__ == "__main__":
    main()
