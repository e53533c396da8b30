"""Context-model training throughput: re-tokenizing every window (frames) vs reading a token cache.

The tokenizer is frozen while the context model trains; the token cache (``aime_rl.training.token_cache``)
tokenizes the replay once. This trains the same context model for ``--steps`` steps both ways on one replay, in one
run (the machines are shared and noisy: compare the ratio), and prints frames/s, the time to build the cache, and
the held-out next-frame accuracy of each (equal results are the point).

    python benchmarks/context_training.py --run runs/demo [--steps 60] [--batch-size 8]

``--run``: a run directory with a replay and a trained tokenizer (``aime-rl collect`` + ``train-tokenizer``).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import torch

from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer
from aime_rl.pipeline import RunDir
from aime_rl.pipeline.stages import trainer_config
from aime_rl.training.perception import train_context_model
from aime_rl.training.token_cache import build_token_cache


def build(config, tokenizer_dir: Path) -> CausalPerceiverIO:
    torch.manual_seed(config.seed)
    shape = (config.sequence_length, 3, *config.frame_shape)
    model = CausalPerceiverIO.from_preset(config.preset, video_shape=shape)
    model.tokenizer.load_state_dict(VQPTTokenizer.from_pretrained(tokenizer_dir).state_dict())
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    run = RunDir(Path(args.run))
    config = run.stored_config()
    if args.batch_size:
        config.batch_size = args.batch_size
    train_config = trainer_config(config, args.steps)
    train_config.eval_every = args.steps  # one evaluation, at the end
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        build_token_cache(
            run.path / "replay", build(config, run.path / "tokenizer" / "model").tokenizer, cache
        )
        cache_seconds = time.perf_counter() - start
        for name, token_cache in (("frames (re-tokenize each window)", None), ("token cache", cache)):
            model = build(config, run.path / "tokenizer" / "model")
            start = time.perf_counter()
            metrics = train_context_model(
                model, run.path / "replay", train_config, Path(tmp) / name.split()[0], token_cache=token_cache
            )
            seconds = time.perf_counter() - start
            frames = args.steps * config.batch_size * config.sequence_length
            rows.append((name, frames / seconds, seconds, metrics["next_frame_accuracy"]))
    print(
        f"\ncontext-model training, preset {config.preset!r} at {config.frame_shape[0]}×{config.frame_shape[1]}, "
        f"{args.steps} steps of {config.batch_size}×{config.sequence_length} frames, {torch.get_num_threads()} "
        f"threads, {platform.processor() or platform.machine()}, {datetime.date.today()}"
    )
    print("| windows from | frames/s | seconds | held-out next-frame accuracy |\n|---|---:|---:|---:|")
    for name, rate, seconds, accuracy in rows:
        print(f"| {name} | {rate:.0f} | {seconds:.1f} | {accuracy:.3f} |")
    print(
        f"\nspeed-up: {rows[1][1] / rows[0][1]:.2f}×; building the cache took {cache_seconds:.1f} s (once per tokenizer)"
    )


if __name__ == "__main__":
    main()
