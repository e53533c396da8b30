"""What a linear probe can read of Catch's velocities from the *exact* positions of the last k frames.

The probe targets of issue 13 ask R² ≥ 0.7 for ball vx and vy. A representation that held the true positions of the
last k frames, exactly, would be read by the same ridge probe (``aime_rl.evaluation``: the demo's protocol, one
split by episode, test frames deduplicated) at the R² this prints: the velocity is the last displacement only while
the ball flies straight, and a bounce off a wall (vx changes sign) or a new ball (both jump) breaks that, so
velocity is a *non-linear* function of the position history. A context at this ceiling holds the positions; above
it, the model has computed the velocity itself.

The fall-speed rows ask the converse: how precisely must a representation place the ball for a model that computes
the velocity to reach a target? An ideal reader fits the slope of the ball's rendered row over its frames in the last
``--window`` (the ball's rows since it appeared), each row off by Gaussian noise of ``--row-noise`` px; the probe reads
that one number (and a flag for a ball that has just appeared). ``--tokenizer DIR`` adds how precisely that
tokenizer's codes place the ball (the row looked up from the codes of the ball's column of cells).

    python benchmarks/velocity_ceiling.py [--steps 3000] [--frames 1 2 3 4] [--seed 0] [--row-noise 0 0.5 1]
        [--window 6] [--tokenizer runs/demo/tokenizer/model]

Prints a markdown table: R² per state variable for each k, features = (ball x, ball y, paddle x) of frames t…t−k+1
(the first frames of an episode repeat its first frame, as a context stream does), and one more row: the exact
velocity of the frame before (what a model that computed the velocity, one frame late, would hold). Positions are the
env's own (normalised to [0, 1]), so the frame size plays no part.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import aime_rl  # noqa: F401  (registers the envs)
from aime_rl.envs import CatchEnv, make_env
from aime_rl.evaluation import collect_labelled, default_label_fn, probe_representations
from aime_rl.evaluation.representations import resized_frames
from aime_rl.perception import VQPTTokenizer

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


def frames_since_new_ball(labels: dict, episode_ids: np.ndarray) -> np.ndarray:
    """int64 ``[N]``: frames since the current ball appeared (0 at an episode's first frame and at each new ball:
    a new fall speed, or a ball higher up than the frame before)."""
    fall = np.asarray(labels["ball_vy"], dtype=np.float64)
    row = np.asarray(labels["ball_y"], dtype=np.float64)
    since = np.zeros(len(fall), dtype=np.int64)
    for i in range(1, len(fall)):
        same_ball = episode_ids[i] == episode_ids[i - 1] and fall[i] == fall[i - 1] and row[i] >= row[i - 1]
        since[i] = since[i - 1] + 1 if same_ball else 0
    return since


def fall_speed_from_rows(
    labels: dict, episode_ids: np.ndarray, window: int, noise_px: float, seed: int = 0
) -> np.ndarray:
    """float32 ``[N, 2]``: an ideal reader's fall speed — the least-squares slope of the ball's rendered row (the
    64×64 render's whole pixel, plus Gaussian noise of ``noise_px``) over this ball's frames in the last ``window``
    (0 where the ball has just appeared) — and a flag for frames that have one. ``noise_px`` stands for how precisely
    a representation places the ball in each frame."""
    size = CatchEnv().size
    rows = np.round(np.asarray(labels["ball_y"], dtype=np.float64) * (size - 1))
    rows = rows + np.random.default_rng(seed).normal(0.0, noise_px, len(rows))
    since = np.minimum(frames_since_new_ball(labels, episode_ids), window - 1)
    speed = np.zeros((len(rows), 2), dtype=np.float32)
    for i in np.flatnonzero(since):
        steps = np.arange(-since[i], 1, dtype=np.float64)
        speed[i] = np.polyfit(steps, rows[i - since[i] : i + 1], 1)[0], 1.0
    return speed


def rows_from_codes(data, tokenizer_dir: str, seed: int = 0) -> tuple[float, float]:
    """How precisely a tokenizer's codes place the ball: the rendered row (64×64 px) of each held-out frame read
    from the codes of the ball's column of cells, by the mean row of the training frames with the same codes (every
    fifth episode held out). Returns (error std in px, share of held-out frames whose codes were seen)."""
    tokenizer = VQPTTokenizer.from_pretrained(tokenizer_dir).eval()
    frames = resized_frames(data.frames, tokenizer.frame_size or (32, 32))
    with torch.inference_mode():
        tokens = torch.cat(
            [tokenizer.tokens(frames[i : i + 512].unsqueeze(0))[0] for i in range(0, len(frames), 512)]
        )
    tokens = tokens.reshape(*tokens.shape[:3], -1).numpy()  # [N, h, w, G]
    size = CatchEnv().size
    rows = np.round(np.asarray(data.labels["ball_y"], dtype=np.float64) * (size - 1))
    columns = np.asarray(data.labels["ball_x"], dtype=np.float64) * (size - 1)
    cell = np.clip((np.round(columns) * tokens.shape[2] // size).astype(int), 0, tokens.shape[2] - 1)
    keys = [(c, *tokens[i, :, c].ravel().tolist()) for i, c in enumerate(cell)]
    held_out = data.episode_ids % 5 == 0
    seen: dict[tuple, list[float]] = {}
    for i in np.flatnonzero(~held_out):
        seen.setdefault(keys[i], []).append(rows[i])
    errors = [np.mean(seen[keys[i]]) - rows[i] for i in np.flatnonzero(held_out) if keys[i] in seen]
    return float(np.std(errors)), len(errors) / max(int(held_out.sum()), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="random-policy frames (the demo probes 3000)")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 3, 4], help="history lengths k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--row-noise",
        type=float,
        nargs="*",
        default=[0.0, 0.5, 1.0],
        help="px (64×64) of error in each frame's ball row for the fall-speed rows",
    )
    parser.add_argument("--tokenizer", help="a tokenizer directory: how precisely its codes place the ball")
    parser.add_argument(
        "--window", type=int, default=6, help="frames the fall-speed reader sees (the demo's window)"
    )
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
    # the velocity read from the rows of the ball since it appeared: what a model that computes it could reach,
    # given how precisely it places the ball in each frame
    for noise in args.row_noise:
        features[f"fall speed from the ball's rows, ±{noise:g} px, window {args.window}"] = (
            fall_speed_from_rows(data.labels, data.episode_ids, args.window, noise, seed=args.seed)
        )
    report = probe_representations(data, features)
    print(f"Catch, {len(data)} random-policy frames, seed {args.seed}\n")
    print(report.to_markdown())
    if args.tokenizer:
        error, covered = rows_from_codes(data, args.tokenizer)
        print(
            f"\nthe ball's row read from the codes of {args.tokenizer}: ±{error:.2f} px "
            f"({covered:.0%} of the held-out frames had codes seen in training)"
        )


if __name__ == "__main__":
    main()
