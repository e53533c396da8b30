"""Benchmark the seed tokenizer's encode speed on CPU, offline and streaming, against a matmul baseline.

Measures, for ``VQPTTokenizer()`` with its seed defaults (64×64 RGB, causal 3D convs, 64 base channels, 4 heads ×
1024 codes, downsample 8; ``perceptual_weight=0`` so LPIPS is not loaded), in eval mode under
``torch.inference_mode()``:

1. offline ``tokenizer.encode(video [B, 16, 3, 64, 64])`` for B = 1 and 4: frames/s, and the FLOPs of one call
   (``torch.utils.flop_counter.FlopCounterMode``) over its time → achieved GFLOP/s;
2. a float32 ``2048×2048 @ 2048×2048`` matmul in the same run → GFLOP/s, the machine's practical peak; the encode
   GFLOP/s is reported as a percentage of it (target: ≥ 40 %);
3. streaming ``stream.step(frame [B, 3, 64, 64])`` after warm-up, B = 1 and 4: ms per step and per frame, against
   the offline per-frame cost (offline call time / (16·B)); target: streaming per frame ≤ 1.5× offline per frame.

All cases are measured in interleaved rounds (matmul, encode B=1, encode B=4, stream B=1, stream B=4, repeat) after
one warm-up call each, so that load from other processes hits every case alike; the table reports medians over the
rounds (stream: over every timed step) and the best time in parentheses. ``torch`` threads are left at the default.
Prints the machine and markdown tables.

Usage: ``python benchmarks/tokenizer.py [--quick] [--rounds 7] [--stream-frames 32] [--channels-last] [--threads N]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from aime_rl.perception import VQPTTokenizer

NUM_FRAMES = 16
FRAME_SHAPE = (3, 64, 64)
MATMUL_SIZE = 2048
BATCHES = (1, 4)
OFFLINE_TARGET = 0.40  # offline encode GFLOP/s as a fraction of the matmul GFLOP/s, at least
STREAM_TARGET = 1.5  # streaming per-frame cost over offline per-frame cost, at most


def load_average() -> str:
    """The 1-minute load average (other processes compete for the cores), or "n/a"."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def machine_info() -> str:
    """One line: OS, CPU, Python, torch, threads, oneDNN, date."""
    return (
        f"{platform.platform()} · CPU {platform.processor() or platform.machine()} · Python "
        f"{platform.python_version()} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
        f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'} · {datetime.date.today()}"
    )


def build_tokenizer(channels_last: bool) -> VQPTTokenizer:
    """The seed configuration (class defaults) without LPIPS, in eval mode."""
    torch.manual_seed(0)
    tokenizer = VQPTTokenizer(perceptual_weight=0.0).eval()
    if channels_last:
        tokenizer = tokenizer.to(memory_format=torch.channels_last_3d)
    return tokenizer


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (convolutions and matmuls, as ``FlopCounterMode`` counts them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_case() -> tuple[Callable[[], object], int]:
    """A float32 square matmul and its FLOPs (``2 n³``)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    return (lambda: a @ b), 2 * MATMUL_SIZE**3


def offline_case(tokenizer: VQPTTokenizer, batch: int) -> Callable[[], object]:
    """One offline ``encode`` of a random ``[batch, 16, 3, 64, 64]`` video."""
    video = torch.rand(batch, NUM_FRAMES, *FRAME_SHAPE)
    return lambda: tokenizer.encode(video)


class StreamCase:
    """A running ``TokenizerStream`` fed random frames; ``step()`` encodes the next frame of every row."""

    def __init__(self, tokenizer: VQPTTokenizer, batch: int):
        self.stream = tokenizer.stream(batch_size=batch)
        self.frames = torch.rand(NUM_FRAMES, batch, *FRAME_SHAPE)
        self.t = 0

    def step(self) -> torch.Tensor:
        tokens = self.stream.step(self.frames[self.t % NUM_FRAMES])
        self.t += 1
        return tokens

    def timed_steps(self, count: int) -> list[float]:
        """Seconds of each of ``count`` consecutive steps."""
        return [timed(self.step) for _ in range(count)]


def measure(tokenizer: VQPTTokenizer, rounds: int, stream_frames: int, warmup_steps: int) -> dict:
    """Interleaved rounds over all cases. Returns ``{case: {"times": [s, ...], "flops": int, "frames": int}}``."""
    matmul, matmul_flops = matmul_case()
    offline = {b: offline_case(tokenizer, b) for b in BATCHES}
    streams = {b: StreamCase(tokenizer, b) for b in BATCHES}
    results = {"matmul": {"times": [], "flops": matmul_flops, "frames": 0}}
    for b in BATCHES:
        results[("offline", b)] = {"times": [], "flops": count_flops(offline[b]), "frames": NUM_FRAMES * b}
    for b in BATCHES:
        for _ in range(warmup_steps):
            streams[b].step()
        results[("stream", b)] = {"times": [], "flops": count_flops(streams[b].step), "frames": b}
    for fn in (matmul, *offline.values()):  # warm-up (oneDNN primitives, allocator)
        fn()
    for _ in range(rounds):
        results["matmul"]["times"] += [timed(matmul) for _ in range(3)]
        for b in BATCHES:
            results[("offline", b)]["times"].append(timed(offline[b]))
        for b in BATCHES:
            results[("stream", b)]["times"] += streams[b].timed_steps(stream_frames)
    return results


def summarize(result: dict) -> dict:
    """Median / best seconds per call, GFLOP per call, GFLOP/s and ms per frame (from the median)."""
    median, best = statistics.median(result["times"]), min(result["times"])
    frames = result["frames"]
    return {
        "median": median,
        "best": best,
        "gflop": result["flops"] / 1e9,
        "gflops": result["flops"] / median / 1e9,
        "gflops_best": result["flops"] / best / 1e9,
        "ms_per_frame": 1e3 * median / frames if frames else None,
        "ms_per_frame_best": 1e3 * best / frames if frames else None,
    }


def label(case: object) -> str:
    if case == "matmul":
        return f"matmul {MATMUL_SIZE}×{MATMUL_SIZE} @ {MATMUL_SIZE}×{MATMUL_SIZE}, float32"
    kind, _ = case
    if kind == "offline":
        return f"offline `encode`, {NUM_FRAMES} frames"
    return "streaming `step`, 1 frame per row"


def print_speed_table(stats: dict) -> None:
    peak = stats["matmul"]["gflops"]
    print(
        "| measurement | batch | ms / call, median (best) | frames/s | GFLOP / call | GFLOP/s | % of matmul "
        "| ms / frame |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case, s in stats.items():
        batch = "–" if case == "matmul" else case[1]
        fps = "–" if s["ms_per_frame"] is None else f"{1e3 / s['ms_per_frame']:.1f}"
        per_frame = "–" if s["ms_per_frame"] is None else f"{s['ms_per_frame']:.1f}"
        print(
            f"| {label(case)} | {batch} | {1e3 * s['median']:.1f} ({1e3 * s['best']:.1f}) | {fps} "
            f"| {s['gflop']:.2f} | {s['gflops']:.1f} | {100 * s['gflops'] / peak:.0f} % | {per_frame} |"
        )


def print_target_table(stats: dict) -> None:
    peak, peak_best = stats["matmul"]["gflops"], stats["matmul"]["gflops_best"]
    print("| target | batch | measured, median (best) | met |")
    print("| --- | ---: | ---: | :---: |")
    for b in BATCHES:
        s = stats[("offline", b)]
        share, share_best = s["gflops"] / peak, s["gflops_best"] / peak_best
        met = "yes" if share >= OFFLINE_TARGET else "no"
        print(
            f"| offline encode ≥ {100 * OFFLINE_TARGET:.0f} % of matmul GFLOP/s | {b} "
            f"| {100 * share:.0f} % ({100 * share_best:.0f} %) | {met} |"
        )
    for b in BATCHES:
        online, offline = stats[("stream", b)], stats[("offline", b)]
        ratio = online["ms_per_frame"] / offline["ms_per_frame"]
        ratio_best = online["ms_per_frame_best"] / offline["ms_per_frame_best"]
        met = "yes" if ratio <= STREAM_TARGET else "no"
        print(
            f"| streaming per frame ≤ {STREAM_TARGET}× offline per frame | {b} "
            f"| {ratio:.2f}× ({ratio_best:.2f}×) | {met} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, 4 stream steps per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument("--stream-frames", type=int, default=32, help="timed stream steps per round")
    parser.add_argument("--warmup-steps", type=int, default=4, help="untimed stream steps before timing")
    parser.add_argument("--channels-last", action="store_true", help="run the model in channels_last_3d")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.stream_frames, args.warmup_steps = 2, 4, 2

    print(f"machine: {machine_info()}")
    memory_format = "channels_last_3d" if args.channels_last else "contiguous"
    print(
        f"tokenizer: VQPTTokenizer() seed defaults, perceptual_weight=0, eval, inference_mode, {memory_format}; "
        f"{args.rounds} interleaved rounds, {args.stream_frames} timed stream steps per round"
    )
    tokenizer = build_tokenizer(args.channels_last)
    load_before = load_average()
    with torch.inference_mode():
        results = measure(tokenizer, args.rounds, args.stream_frames, args.warmup_steps)
    stats = {case: summarize(result) for case, result in results.items()}
    print(f"1-min load average before / after: {load_before} / {load_average()}\n")
    print_speed_table(stats)
    print()
    print_target_table(stats)


if __name__ == "__main__":
    main()
