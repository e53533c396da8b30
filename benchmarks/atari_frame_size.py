"""What frame size should an Atari model see? A measurement, not a guess (issue 12).

Atari frames are 210×160 and the objects that carry the state are tiny (Pong's ball: 2×4 pixels). A model that sees
frames resized to S×S can at best know what survives the resize. For each size this prints, on the same
random-policy frames (episodes cut at ``--episode-steps`` so the 70/10/20 episode split has enough episodes):

- ``visible``: the share of the moving pixels (those that differ from the episode's median frame by more than the
  tokenizer's foreground threshold, 0.05) that still differ by more than that threshold after the resize — what the
  tokenizer's foreground term can still see;
- the AtariARI linear-probe F1 of the resized pixels themselves (the information ceiling of that frame size) for
  each RAM variable, and the mean over the paper's categories.

    python benchmarks/atari_frame_size.py [--game pong] [--sizes 32 64 80x64 96] [--steps 3000]

A size is ``S`` (square) or ``HxW`` (e.g. ``80x64`` keeps about the 210×160 aspect).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.envs import make_env
from aime_rl.evaluation import ProbeConfig, atari_ram_labels, collect_labelled, probe_representations
from aime_rl.evaluation.representations import pixel_features, resized_frames
from aime_rl.perception.losses import FOREGROUND_THRESHOLD


def visible_share(frames: np.ndarray, episode_ids: np.ndarray, size: tuple[int, int]) -> float:
    """Share of moving full-size pixels ``[N, H, W, 3]`` whose resized location still moves above the threshold."""
    kept = total = 0
    for episode in np.unique(episode_ids):
        full = torch.as_tensor(frames[episode_ids == episode]).permute(0, 3, 1, 2).float() / 255.0
        small = resized_frames(frames[episode_ids == episode], size).float() / 255.0
        moving = (full - full.median(0).values).abs().amax(1) > FOREGROUND_THRESHOLD  # [n, H, W]
        moving_small = (small - small.median(0).values).abs().amax(1) > FOREGROUND_THRESHOLD  # [n, h, w]
        # each full-size pixel looks at the resized pixel it falls into
        back = F.interpolate(moving_small[:, None].float(), size=full.shape[-2:], mode="nearest")[:, 0] > 0
        kept += int((moving & back).sum())
        total += int(moving.sum())
    return kept / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="pong", help="env preset or ALE id (default: pong)")
    parser.add_argument("--sizes", nargs="+", default=["32", "64", "80x64", "96"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episode-steps", type=int, default=200)
    args = parser.parse_args()

    env_fn = lambda: make_env(args.game, training=False)  # noqa: E731
    probe_env = env_fn()
    label_fn = atari_ram_labels(probe_env.spec.id if probe_env.spec else args.game)
    probe_env.close()
    data = collect_labelled(env_fn, label_fn, args.steps, seed=0, max_episode_steps=args.episode_steps)
    print(f"{args.game}: {len(data)} frames, {len(np.unique(data.episode_ids))} episodes\n")
    rows = []
    for size in args.sizes:
        start = time.time()
        shape = tuple(int(s) for s in size.split("x")) if "x" in size else (int(size), int(size))
        visible = visible_share(data.frames, data.episode_ids, shape)
        report = probe_representations(data, {"pixels": pixel_features(data, shape)}, ProbeConfig())
        result = report.representations["pixels"]
        rows.append((size, visible, result, time.time() - start))
        print(
            f"size {size}: visible {visible:.3f}, score {result.score:.3f} ({time.time() - start:.0f} s)",
            flush=True,
        )
    names = list(rows[0][2].variables)
    print("\n| frame size | moving pixels still visible | " + " | ".join(names) + " | score |")
    print("|---|---:|" + "---:|" * (len(names) + 1))
    for size, visible, result, _ in rows:
        cells = " | ".join(f"{result.variables[n].score:.3f}" for n in names)
        print(f"| {size} | {visible:.3f} | {cells} | {result.score:.3f} |")


if __name__ == "__main__":
    main()
