"""Replay throughput: write a store to a temporary directory, then sample windows from it.

Prints a markdown table of windows/s (and frames/s, MB/s of uint8 frames) for uniform sampling of
``batch x length`` windows of 64x64x3 frames: the store's own sampler, then the training path
(``ReplayWindowDataset``, one deterministic batch per step) in-process and through its ``DataLoader`` workers.
The store was just written, so it is read from the page cache (the disk-bound case is slower).

    python benchmarks/replay.py [--episodes 200] [--steps 200] [--batch 32] [--length 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from aime_rl.replay import ReplayStore, ReplayWindowDataset

FRAME_SHAPE = (64, 64, 3)


def write_store(directory: str, episodes: int, steps: int, seed: int = 0) -> float:
    """Write ``episodes`` random episodes of ``steps`` steps; return the seconds it took."""
    rng = np.random.default_rng(seed)
    store = ReplayStore(directory, frame_shape=FRAME_SHAPE)
    frames = rng.integers(0, 256, size=(steps + 1, *FRAME_SHAPE), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(episodes):
        store.add_episode(
            frames,
            rng.integers(0, 6, size=steps),
            rng.normal(size=steps).astype(np.float32),
            np.arange(steps) == steps - 1,
            np.zeros(steps, dtype=bool),
        )
    return time.perf_counter() - start


def time_batches(next_batch, seconds: float, warmup: int = 3) -> tuple[int, float]:
    """Call ``next_batch`` for about ``seconds`` after ``warmup`` calls; return (batches, elapsed seconds)."""
    for _ in range(warmup):
        next_batch()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next_batch()
        count += 1
    return count, time.perf_counter() - start


def row(name: str, batches: int, elapsed: float, batch: int, length: int) -> str:
    windows = batches * batch / elapsed
    frames = windows * length
    megabytes = frames * int(np.prod(FRAME_SHAPE)) / 1e6
    return f"| {name} | {batches} | {windows:,.0f} | {frames:,.0f} | {megabytes:,.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per mode")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aime_rl_replay_bench_") as directory:
        write_seconds = write_store(directory, args.episodes, args.steps)
        store = ReplayStore.open(directory)
        rng = np.random.default_rng(0)
        in_process = time_batches(lambda: store.sample_windows(args.batch, args.length, rng), args.seconds)
        timings = {}
        for workers in (0, args.workers):
            dataset = ReplayWindowDataset(directory, args.batch, args.length, num_workers=workers)
            timings[workers] = time_batches(dataset.batches().__next__, args.seconds)

        size_gb = store.num_rows * int(np.prod(FRAME_SHAPE)) / 1e9
        print(
            f"store: {args.episodes} episodes x {args.steps} steps ({store.num_rows:,} frames, {size_gb:.2f} GB), "
            f"written in {write_seconds:.1f} s ({store.num_rows / write_seconds:,.0f} frames/s incl. fsync)"
        )
        print(f"windows: batch {args.batch} x {args.length} frames of {FRAME_SHAPE}, uniform sampling\n")
        print("| mode | batches | windows/s | frames/s | MB/s |")
        print("|---|---:|---:|---:|---:|")
        print(row("in-process `sample_windows`", *in_process, args.batch, args.length))
        print(row("`ReplayWindowDataset`, in-process", *timings[0], args.batch, args.length))
        name = f"`ReplayWindowDataset`, DataLoader, {args.workers} workers"
        print(row(name, *timings[args.workers], args.batch, args.length))


if __name__ == "__main__":
    main()
