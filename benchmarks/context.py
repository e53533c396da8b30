"""Benchmark the streaming context (``CausalPerceiverIO.stream``) against recomputing a 16-frame window.

Models: ``"paper"``, the seed configuration ``CausalPerceiverIO(perceptual_weight=0.0)`` (its defaults: 128
latents × 256 channels, 6 self-attention layers, tokenizer with 64 base channels and 4 heads × 1024 codes, 64×64
RGB frames) and the ``"small"`` preset, with random weights, in eval mode under ``torch.inference_mode()``.
Window W = 16.

1. **Latency**, batch 1 and 8: per-step time of ``stream.step(frames [B, 3, 64, 64])`` once the window is
   full (16 untimed warm-up steps first), against the per-step time of the recompute alternative,
   ``model.extract_context(last_16_frames [B, 16, 3, 64, 64], window=16)[:, -1]`` (one untimed warm-up
   call). Speedup = recompute / stream; target: ≥ 10× for the paper model at W = 16. All cases are measured
   in interleaved rounds (a few stream steps, then one recompute call, for every model and batch, repeated)
   so that load from other processes hits every case alike; tables give the median and, in parentheses,
   the best time. As a sanity check, the stream's context after exactly 16 frames is compared with the
   recompute on the same 16 frames (equal up to float rounding: both saw the same frames from a fresh start).
2. **Memory**, batch 1, ``"small"`` preset (the paper model takes 0.2–0.5 s a step on a 2-core CPU, too slow
   for 1,000 steps here): ``stream.nbytes()`` and the process RSS (current, from ``/proc/self/statm``, and
   peak, from ``resource.getrusage``) at steps 16 … 1,000, and the last step at which the peak rose. This
   runs first, before any other model exists, so the peak is not set by the larger latency runs. Targets,
   step 16 → 1,000: ``nbytes`` unchanged, current RSS growth ≤ 8 MiB, peak RSS growth ≤ 32 MiB. The peak
   bound is looser because glibc now and then serves a step's large temporaries (e.g. the vol2col buffers
   of batch-1 conv3d) from fresh memory, which lifts the peak by ~6.5 MiB at a time while live memory stays
   flat; a cache that kept one more frame per step would add ≥ 0.125 MiB a step, ≥ 120 MiB over the run,
   far above either bound. The paper model's ``nbytes`` at step 16 and at the end of its latency run are
   reported too.

``--profile`` adds the ``torch.profiler`` top ops of two paper stream steps at batch 1. ``torch`` threads
are left at the default unless ``--threads`` is given; on a shared, loaded machine use ``--threads 1``:
with 2 threads on 2 busy cores every op waits at an OpenMP barrier for a descheduled thread (a small-model
step took 10× longer). Prints the machine and markdown tables.

Usage: ``python benchmarks/context.py [--quick] [--threads 1] [--rounds 3] [--stream-steps 7] [--profile]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections import deque
from collections.abc import Callable

import torch

from aime_rl.perception import CausalPerceiverIO

DATE = "2026-11-30"
WINDOW = 16
FRAME_SHAPE = (3, 64, 64)
BATCHES = (1, 8)
PRESETS = ("paper", "small")
SPEEDUP_TARGET = 10.0  # recompute time / stream time per step, at least (paper model)
RSS_TOLERANCE = 8 * 2**20  # current RSS growth between step 16 and the last step, at most (bytes)
PEAK_TOLERANCE = (
    32 * 2**20
)  # peak RSS growth over the same steps, at most (bytes; allocator noise, see above)
MIB = 2**20


def machine_info() -> str:
    """One line: OS, CPU, Python, torch, threads, date."""
    return (
        f"{platform.platform()} · CPU {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} cores) · Python {platform.python_version()} · torch {torch.__version__} · "
        f"{torch.get_num_threads()} threads · {DATE}"
    )


def build_model(preset: str) -> CausalPerceiverIO:
    """``"paper"``: the class defaults (the seed configuration); otherwise ``from_preset``. LPIPS off, random
    weights, eval mode."""
    torch.manual_seed(0)
    if preset == "paper":
        model = CausalPerceiverIO(perceptual_weight=0.0)
    else:
        model = CausalPerceiverIO.from_preset(preset, perceptual_weight=0.0)
    return model.eval()


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_now() -> int | None:
    """Current resident set size in bytes (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def rss_peak() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


class Case:
    """One model and batch size: a running stream and the last ``WINDOW`` frames it was fed."""

    def __init__(self, preset: str, model: CausalPerceiverIO, batch: int, pool_size: int = 2 * WINDOW):
        self.preset, self.model, self.batch = preset, model, batch
        self.stream = model.stream(batch, window=WINDOW)
        self.pool = torch.rand(pool_size, batch, *FRAME_SHAPE)
        self.history: deque[torch.Tensor] = deque(maxlen=WINDOW)
        self.steps = 0
        self.stream_times: list[float] = []
        self.recompute_times: list[float] = []

    def step(self) -> torch.Tensor:
        """Feed the next frame to the stream → context ``[B, D]``."""
        frame = self.pool[self.steps % len(self.pool)]
        self.history.append(frame)
        self.steps += 1
        return self.stream.step(frame)

    def recompute(self) -> torch.Tensor:
        """The context of the newest frame from scratch, over the last ``WINDOW`` frames → ``[B, D]``."""
        video = torch.stack(tuple(self.history), dim=1)
        return self.model.extract_context(video, window=WINDOW)[:, -1]

    def warm_up(self) -> None:
        """Fill the window (untimed), check stream == recompute at step 16, record the cache size."""
        for _ in range(WINDOW):
            online = self.step()
        self.max_abs_diff = (online - self.recompute()).abs().max().item()
        self.nbytes_full = self.stream.nbytes()

    def run_round(self, stream_steps: int) -> None:
        self.stream_times += [timed(self.step) for _ in range(stream_steps)]
        self.recompute_times.append(timed(self.recompute))


def memory_run(preset: str, steps: int, checkpoints: tuple[int, ...]) -> list[dict]:
    """Stream ``steps`` frames at batch 1 → per checkpoint: ``nbytes``, RSS, last step the peak rose."""
    case = Case(preset, build_model(preset), batch=1)
    rows, peak, rose_at = [], 0, 0
    for _ in range(steps):
        case.step()
        if rss_peak() > peak:
            peak, rose_at = rss_peak(), case.steps
        if case.steps in checkpoints:
            row = {"step": case.steps, "nbytes": case.stream.nbytes(), "rss": rss_now(), "peak": peak}
            rows.append({**row, "rose_at": rose_at})
    return rows


def measure_latency(presets: tuple[str, ...], batches: tuple[int, ...], rounds: int, stream_steps: int):
    """Build the cases, warm them up, then interleaved rounds over all of them. Returns the cases."""
    models = {preset: build_model(preset) for preset in presets}
    cases = [Case(preset, models[preset], batch) for preset in presets for batch in batches]
    for case in cases:
        case.warm_up()
    for _ in range(rounds):
        for case in cases:
            case.run_round(stream_steps)
    return cases


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def speedups(case: Case) -> tuple[float, float]:
    """(median recompute / median stream, best recompute / best stream)."""
    median = statistics.median(case.recompute_times) / statistics.median(case.stream_times)
    return median, min(case.recompute_times) / min(case.stream_times)


def print_latency_table(cases: list[Case]) -> None:
    print(
        "| model | batch | stream `step`, ms (best) "
        "| recompute `extract_context(16 frames)[:, -1]`, ms (best) | speedup (best) | stream ms / frame "
        "| max abs diff at t=16 | `nbytes` MiB, step 16 → step N |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in cases:
        stream, recompute = statistics.median(c.stream_times), statistics.median(c.recompute_times)
        median, best = speedups(c)
        print(
            f"| {c.preset} | {c.batch} | {ms(stream)} ({ms(min(c.stream_times))}) "
            f"| {ms(recompute)} ({ms(min(c.recompute_times))}) | {median:.1f}× ({best:.1f}×) "
            f"| {ms(stream / c.batch)} | {c.max_abs_diff:.1e} "
            f"| {c.nbytes_full / MIB:.2f} → {c.stream.nbytes() / MIB:.2f} (N={c.steps}) |"
        )


def print_memory_table(rows: list[dict]) -> None:
    print("| step | `stream.nbytes()` MiB | RSS now MiB | peak RSS MiB | peak last rose at step |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        now = "–" if r["rss"] is None else f"{r['rss'] / MIB:.1f}"
        print(f"| {r['step']} | {r['nbytes'] / MIB:.3f} | {now} | {r['peak'] / MIB:.1f} | {r['rose_at']} |")


def print_target_table(cases: list[Case], memory: list[dict], memory_preset: str) -> None:
    print("| target | configuration | measured, median (best) | met |")
    print("| --- | --- | ---: | :---: |")
    for c in cases:
        if c.preset != "paper":
            continue
        median, best = speedups(c)
        met = "yes" if median >= SPEEDUP_TARGET else "no"
        print(
            f"| stream ≥ {SPEEDUP_TARGET:.0f}× faster per step than recompute, W={WINDOW} "
            f"| paper, batch {c.batch} | {median:.1f}× ({best:.1f}×) | {met} |"
        )
    first, last = memory[0], memory[-1]
    config = f"{memory_preset}, batch 1, step {first['step']} → {last['step']}"
    flat = "yes" if last["nbytes"] == first["nbytes"] else "no"
    print(
        f"| `stream.nbytes()` flat after the window fills | {config} "
        f"| {first['nbytes']} → {last['nbytes']} bytes | {flat} |"
    )
    if first["rss"] is not None:
        growth = last["rss"] - first["rss"]
        met = "yes" if growth <= RSS_TOLERANCE else "no"
        print(
            f"| RSS growth ≤ {RSS_TOLERANCE // MIB} MiB after the window fills | {config} "
            f"| {growth / MIB:+.1f} MiB | {met} |"
        )
    growth = last["peak"] - first["peak"]
    met = "yes" if growth <= PEAK_TOLERANCE else "no"
    print(
        f"| peak RSS growth ≤ {PEAK_TOLERANCE // MIB} MiB after the window fills | {config} "
        f"| {growth / MIB:+.1f} MiB | {met} |"
    )


def print_profile(preset: str = "paper", batch: int = 1, rows: int = 12) -> None:
    """``torch.profiler`` top ops (self CPU time) of two stream steps after the window is full."""
    from torch.profiler import ProfilerActivity, profile

    case = Case(preset, build_model(preset), batch)
    for _ in range(WINDOW + 1):
        case.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        case.step()
        case.step()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)
    print(f"profile: two `stream.step` calls, {preset}, batch {batch}\n\n```\n{table}```")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 1, 1 round, 64 memory steps")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one recompute call each)")
    parser.add_argument("--stream-steps", type=int, default=7, help="timed stream steps per round")
    parser.add_argument("--memory-steps", type=int, default=1000, help="length of the memory run")
    parser.add_argument("--memory-preset", default="small", help="model of the memory run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also profile one paper stream step, batch 1")
    args = parser.parse_args()
    args.batches = BATCHES
    if args.quick:
        args.batches, args.rounds, args.stream_steps, args.memory_steps = (1,), 1, 2, 64
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_info()}")
    print(
        f"models: {', '.join(PRESETS)} (CausalPerceiverIO, perceptual_weight=0, random weights), eval, "
        f"inference_mode; window {WINDOW}; {args.rounds} interleaved rounds of {args.stream_steps} stream "
        f"steps + 1 recompute call; memory run: {args.memory_preset}, batch 1, {args.memory_steps} steps\n"
    )
    checkpoints = tuple(s for s in (WINDOW, 100, 250, 500, args.memory_steps) if s <= args.memory_steps)
    with torch.inference_mode():
        memory = memory_run(args.memory_preset, args.memory_steps, checkpoints)
        cases = measure_latency(PRESETS, args.batches, args.rounds, args.stream_steps)
    print_latency_table(cases)
    print()
    print_memory_table(memory)
    print()
    print_target_table(cases, memory, args.memory_preset)
    if args.profile:
        print()
        with torch.inference_mode():
            print_profile()


if __name__ == "__main__":
    main()
