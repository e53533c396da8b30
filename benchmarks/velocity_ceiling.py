"""What a linear probe can read of Catch's velocities from the *exact* positions of the last k frames.

The probe targets of issue 13 ask R² ≥ 0.7 for ball vx and vy. A representation that held the true positions of the
last k frames, exactly, would be read by the same ridge probe (``aime_rl.evaluation``: the demo's protocol, one
split by episode, test frames deduplicated) at the R² this prints: the velocity is the last displacement only while
the ball flies straight, and a bounce off a wall (vx changes sign) or a new ball (both jump) breaks that, so
velocity is a *non-linear* function of the position history. A context at this ceiling holds the positions; above
it, the model has computed the velocity itself.

    python benchmarks/velocity_ceiling.py [--steps 3000] [--frames 1 2 3 4] [--seed 0]

Prints a markdown table: R² per state variable for each k, features = (ball x, ball y, paddle x) of frames t…t−k+1
(the first frames of an episode repeat its first frame, as a context stream does), and one more row: the exact
velocity of the frame before (what a model that computed the velocity, one frame late, would hold). Positions are the
env's own (normalised to [0, 1]), so the frame size plays no part.
"""

from __future__ import annotations

import argparse

import numpy as np

import aime_rl  # noqa: F401  (registers the envs)
from aime_rl.envs import make_env
from aime_rl.evaluation import collect_labelled, default_label_fn, probe_representations

POSITIONS = ("ball_x", "ball_y", "paddle_x")


def position_history(labels: dict, episode_ids: np.ndarray, frames: int) -> np.ndarray:
    """float32 ``[N, 3·frames]``: the exact positions of frames t, t−1, …, t−frames+1 (clamped to the episode's
    first frame)."""
    positions = np.stack([np.asarray(labels[name], dtype=np.float32) for name in POSITIONS], axis=1)
    first = np.searchsorted(
        episode_ids, episode_ids
    )  # episode ids are sorted: index of each episode's first frame
    index = np.arange(len(positions))
    return np.concatenate([positions[np.maximum(index - k, first)] for k in range(frames)], axis=1)


def previous_velocity(labels: dict, episode_ids: np.ndarray) -> np.ndarray:
    """float32 ``[N, 2]``: the exact (ball vx, ball vy) of frame t − 1 (an episode's first frame: its own)."""
    velocity = np.stack(
        [np.asarray(labels[name], dtype=np.float32) for name in ("ball_vx", "ball_vy")], axis=1
    )
    first = np.searchsorted(episode_ids, episode_ids)
    index = np.arange(len(velocity))
    return velocity[np.maximum(index - 1, first)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="random-policy frames (the demo probes 3000)")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 3, 4], help="history lengths k")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def env_fn():
        return make_env("catch", training=False)

    env = env_fn()
    data = collect_labelled(env_fn, default_label_fn(env), args.steps, seed=args.seed)
    if np.any(np.diff(data.episode_ids) < 0):
        raise ValueError("expected the frames grouped by episode in collection order")
    features = {
        f"exact positions, last {k} frame{'s' if k > 1 else ''}": position_history(
            data.labels, data.episode_ids, k
        )
        for k in args.frames
    }
    # a representation that had computed the velocity, one frame late: still broken by every bounce and new ball
    features["exact velocity of the frame before"] = previous_velocity(data.labels, data.episode_ids)
    report = probe_representations(data, features)
    print(f"Catch, {len(data)} random-policy frames, seed {args.seed}\n")
    print(report.to_markdown())


if __name__ == "__main__":
    main()
