"""What probes and policies can reach on Catch from the exact state: the ceilings behind issue 13's Catch targets.

Issue 13 asks the context for R² ≥ 0.7 on ``ball_vx`` and ``ball_vy`` by a ridge probe. A probe of the context can do
no better than the same probe of the exact state the frames show; this script measures that, on random-policy
frames as the probes use (``aime_rl.evaluation``'s protocol: every frame, new balls and bounces included), for
readers that get:

- the exact positions of the last k frames (``ball_x, ball_y, paddle_x``; the frame before an episode's first
  repeats it) — what a representation that locates everything perfectly but computes nothing offers a linear probe;
- the same, read by an MLP (two hidden layers of 256) — what computing from them can give;
- the exact velocity of the frame before — what a representation that computed the velocity one frame late offers.

Scores are held-out R² (the last 20 % of the frames; episodes are short, so the cut splits few of them).

A second table: what precision a policy needs. Two fixed policies read the true state through independent Gaussian
noise sized so that a probe of it would score a given R² (noise std = the variable's std · √(1 − R²), fresh each
step): one moves the paddle towards the ball's column (``CatchEnv.chaser_action``'s rule), one towards the column
where the ball will land (``oracle_action``'s). Mean return over ``--episodes`` episodes.

    python benchmarks/catch_ceilings.py [--steps 30000] [--seed 0] [--episodes 40]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from aime_rl.envs.catch import STATE_FIELDS, CatchEnv

POSITIONS = [STATE_FIELDS.index(name) for name in ("ball_x", "ball_y", "paddle_x")]
TARGETS = ("ball_vx", "ball_vy")


def random_play(steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States ``[N, 5]`` of a uniform-random policy and, per frame, the index of its episode's first frame ``[N]``."""
    env = CatchEnv()
    env.reset(seed=seed)
    env.action_space.seed(seed)
    states, starts, start = [], [], 0
    for index in range(steps):
        states.append(env.state_vector().copy())
        starts.append(start)
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
            start = index + 1
    return np.asarray(states, dtype=np.float64), np.asarray(starts)


def history(states: np.ndarray, starts: np.ndarray, frames: int) -> np.ndarray:
    """The positions of the last ``frames`` frames side by side ``[N, 3 · frames]`` (clamped at the episode start)."""
    index = np.arange(len(states))
    columns = [states[np.maximum(index - lag, starts)][:, POSITIONS] for lag in range(frames)]
    return np.concatenate(columns, axis=1)


def held_out_r2(target: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - ((target - predicted) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def linear_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Least squares on the training rows (with an intercept), R² on the others."""
    design = np.c_[x, np.ones(len(x))]
    weight = np.linalg.lstsq(design[train], y[train], rcond=None)[0]
    return held_out_r2(y[~train], design[~train] @ weight)


def mlp_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, steps: int = 6000, seed: int = 0) -> float:
    """A two-hidden-layer MLP (256, ReLU, Adam) on the training rows, R² on the others."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = torch.tensor(x, dtype=torch.float32)
    targets = torch.tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rows = np.flatnonzero(train)
    for _ in range(steps):
        batch = torch.from_numpy(rng.choice(rows, 256))
        loss = (net(inputs[batch]).squeeze(-1) - targets[batch]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = net(inputs[torch.from_numpy(np.flatnonzero(~train))]).squeeze(-1).numpy()
    return held_out_r2(y[~train], predicted)


def noisy_policy_return(r2: float, target: str, episodes: int, spread: dict[str, float], seed: int) -> float:
    """Mean return of the paddle moving towards ``target`` ("ball_x" or "landing_x") as read through noise at
    ``r2`` (``spread``: each variable's std under random play), the paddle's column read the same way."""
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(episodes):
        env = CatchEnv()
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        dead_zone = env.paddle_speed / (env.size - 1) / 2
        while not done:
            true = {
                "ball_x": env.state_vector()[0],
                "landing_x": env.predicted_landing_x() / (env.size - 1),
                "paddle_x": env.state_vector()[4],
            }
            read = {
                name: value + rng.normal(0, spread[name] * (1 - r2) ** 0.5) for name, value in true.items()
            }
            gap = read[target] - read["paddle_x"]
            action = 2 if gap > dead_zone else 0 if gap < -dead_zone else 1
            _, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    states, starts = random_play(args.steps, args.seed)
    train = np.arange(len(states)) < int(0.8 * len(states))
    previous = states[np.maximum(np.arange(len(states)) - 1, starts)]
    rows = {
        "exact positions, last 2 frames: linear": lambda y: linear_r2(history(states, starts, 2), y, train),
        "exact positions, last 4 frames: linear": lambda y: linear_r2(history(states, starts, 4), y, train),
        "exact positions, last 2 frames: MLP": lambda y: mlp_r2(history(states, starts, 2), y, train),
        "exact velocity of the frame before: linear": None,
    }
    print(f"Catch, {args.steps} random-policy frames (seed {args.seed}); held-out R²\n")
    print("| reader | " + " | ".join(TARGETS) + " |")
    print("|---|" + "---:|" * len(TARGETS))
    for name, score in rows.items():
        cells = []
        for target in TARGETS:
            column = STATE_FIELDS.index(target)
            y = states[:, column]
            value = linear_r2(previous[:, [column]], y, train) if score is None else score(y)
            cells.append(f"{value:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    new_ball = np.r_[False, states[1:, 1] < states[:-1, 1]] | (np.arange(len(states)) == starts)
    print(f"\nframes where a new ball appears (its velocity is not yet visible): {new_ball.mean():.3f}")

    env = CatchEnv()
    landing = []
    env.reset(seed=args.seed)
    for _ in range(2000):
        landing.append(env.predicted_landing_x() / (env.size - 1))
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()
    spread = {
        "ball_x": float(states[:, 0].std()),
        "paddle_x": float(states[:, 4].std()),
        "landing_x": float(np.std(landing)),
    }
    levels = (1.0, 0.99, 0.98, 0.95, 0.9, 0.7, 0.5, 0.3)
    print(
        f"\nPolicies reading the true state through noise at a probe's R² (mean return, {args.episodes} episodes)\n"
    )
    print("| R² | " + " | ".join(f"{level:g}" for level in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for target, label in (
        ("ball_x", "towards the ball's column"),
        ("landing_x", "towards the landing column"),
    ):
        cells = [
            f"{noisy_policy_return(level, target, args.episodes, spread, args.seed):+.2f}" for level in levels
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
