"""Where Pong's RAM puts the paddles, against where the frame draws them: what caps the player-y probe.

Plays ``--steps`` random-policy steps of ALE/Pong-v5 and, at every step, reads the paddles' RAM bytes (AtariARI's
annotations: player y = 51, enemy y = 50) and the top row of each paddle's colour in its column of the 210×160
frame. Prints, per paddle, how often it is drawn shorter than its full height (pressed against the field's top or
bottom wall, clipped), how many RAM values lie behind those clipped pictures, and how well ``row = a · RAM + b``
fits where it is fully drawn.

    python benchmarks/pong_paddle_ram.py [--steps 3000] [--seed 0]
"""

from __future__ import annotations

import argparse

import ale_py
import gymnasium as gym
import numpy as np

gym.register_envs(ale_py)

PLAYER = {"ram": 51, "columns": slice(140, 144), "colour": (92, 186, 92)}
ENEMY = {"ram": 50, "columns": slice(16, 20), "colour": (213, 130, 74)}
FIELD_ROWS = slice(34, 194)  # between the walls


def paddle_rows(frame: np.ndarray, paddle: dict) -> tuple[int, int]:
    """Frame ``[210, 160, 3]`` → the paddle's top row inside the field and its drawn height ((-1, 0): not drawn)."""
    band = frame[FIELD_ROWS, paddle["columns"]]
    drawn = np.all(band == paddle["colour"], axis=-1).any(axis=1)
    return (int(np.argmax(drawn)), int(drawn.sum())) if drawn.any() else (-1, 0)


def play(steps: int, seed: int) -> dict[str, np.ndarray]:
    """``{paddle: [steps, 3]}`` (RAM value, top row, drawn height) of ``steps`` random-policy steps."""
    env = gym.make("ALE/Pong-v5")
    frame, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    seen: dict[str, list] = {"player": [], "enemy": []}
    for _ in range(steps):
        frame, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        ram = env.unwrapped.ale.getRAM()
        for name, paddle in (("player", PLAYER), ("enemy", ENEMY)):
            seen[name].append((int(ram[paddle["ram"]]), *paddle_rows(frame, paddle)))
        if terminated or truncated:
            frame, _ = env.reset()
    env.close()
    return {name: np.array(rows) for name, rows in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Pong, {args.steps} random-policy steps, seed {args.seed}\n")
    print(
        "| paddle | drawn | clipped at a wall | RAM values behind the clipped picture | "
        "fit where fully drawn | mean error (px) |\n|---|---:|---:|---:|---|---:|"
    )
    for name, seen in play(args.steps, args.seed).items():
        ram, rows, height = seen.T
        drawn = height > 0
        clipped = drawn & (height < height.max())
        full = drawn & ~clipped
        slope, intercept = np.polyfit(ram[full], rows[full], 1)
        error = np.abs(rows[full] - (slope * ram[full] + intercept)).mean()
        print(
            f"| {name} | {drawn.mean():.3f} | {clipped.mean():.3f} | {len(set(ram[clipped].tolist()))} | "
            f"row = {slope:.3f} · RAM {intercept:+.1f} | {error:.2f} |"
        )


if __name__ == "__main__":
    main()
