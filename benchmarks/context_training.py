"""Context-model training throughput: re-tokenizing every window (frames) vs a token cache, a narrower decoder and
fewer next-frame decodes.

The tokenizer is frozen while the context model trains; the token cache (``aime_rl.training.token_cache``)
tokenizes the replay once. The decoder (``PredictorConfig.decoder_channels``) is a training head with one query per
predicted token position, which at an Atari frame's 120 positions holds most of a step's work; the next-frame terms
decode from every earlier frame of a clip, or from ``next_frame_samples`` of them. This trains the
run's context model for ``--steps`` steps each way on one replay, in one run (the machines are shared and noisy:
compare the ratios), and prints frames/s, the time to build the cache, and the held-out next-frame accuracy of each
(equal results are the point).

    python benchmarks/context_training.py --run runs/pong [--steps 60] [--batch-size 8] [--decoder-channels 64]
        [--next-frame-samples 1]

``--run``: a run directory with a replay and a trained tokenizer (``aime-rl collect`` + ``train-tokenizer``), whose
context model can train from cached tokens (no ``motion_attention_bias`` or ``pixel_changes``: those read the
frames; the Atari recipe, ``--config atari``, qualifies). The model is the run's (preset + ``predictor_kwargs``).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from aime_rl.perception import CausalPerceiverIO, PredictorConfig, VQPTTokenizer
from aime_rl.pipeline import RunConfig, RunDir
from aime_rl.pipeline.stages import build_model, trainer_config
from aime_rl.training.perception import train_context_model
from aime_rl.training.token_cache import build_token_cache


def build(
    config: RunConfig,
    tokenizer_dir: Path,
    decoder_channels: int | None = None,
    next_frame_samples: int | None = None,
) -> CausalPerceiverIO:
    """The run's context model around its trained tokenizer, its decoder ``decoder_channels`` wide (None: the
    latents' width, the seed's) and its next-frame terms decoding ``next_frame_samples`` frames of each clip (None:
    every frame, the seed's). A checkout from before a setting existed builds without it."""
    kwargs = dict(config.predictor_kwargs)
    known = {f.name for f in fields(PredictorConfig)}
    for name, value in (("decoder_channels", decoder_channels), ("next_frame_samples", next_frame_samples)):
        if name in known:
            kwargs[name] = value
        else:  # a run made with a newer recipe, measured on an older checkout
            kwargs.pop(name, None)
    return build_model(replace(config, predictor_kwargs=kwargs), VQPTTokenizer.from_pretrained(tokenizer_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--decoder-channels", type=int, nargs="*", default=[64], help="a row from the cache for each width"
    )
    parser.add_argument(
        "--next-frame-samples",
        type=int,
        nargs="*",
        default=[1],
        help="for each decoder width, a row from the cache for each number of frames the next-frame terms decode",
    )
    args = parser.parse_args()
    run = RunDir(Path(args.run))
    config = run.stored_config()
    if args.batch_size:
        config.batch_size = args.batch_size
    tokenizer_dir = run.path / "tokenizer" / "model"
    train_config = trainer_config(config, args.steps)
    train_config.eval_every = args.steps  # one evaluation, at the end
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        build_token_cache(run.path / "replay", build(config, tokenizer_dir).tokenizer, cache)
        cache_seconds = time.perf_counter() - start
        width = "the latents' width"
        variants = [(f"frames (re-tokenize each window), decoder at {width}", None, None, None)]
        variants += [(f"token cache, decoder at {width}", cache, None, None)]
        for c in args.decoder_channels:
            variants += [(f"token cache, decoder_channels={c}", cache, c, None)]
            variants += [
                (f"token cache, decoder_channels={c}, next_frame_samples={k}", cache, c, k)
                for k in args.next_frame_samples
            ]
        for index, (name, token_cache, channels, samples) in enumerate(variants):
            model = build(config, tokenizer_dir, channels, samples)
            start = time.perf_counter()
            metrics = train_context_model(
                model, run.path / "replay", train_config, Path(tmp) / f"log{index}", token_cache=token_cache
            )
            seconds = time.perf_counter() - start
            frames = args.steps * config.batch_size * config.sequence_length
            rows.append((name, frames / seconds, seconds, metrics["next_frame_accuracy"]))
    print(
        f"\ncontext-model training, preset {config.preset!r} at {config.frame_shape[0]}×{config.frame_shape[1]}, "
        f"{args.steps} steps of {config.batch_size}×{config.sequence_length} frames, {torch.get_num_threads()} "
        f"threads, {platform.processor() or platform.machine()}, {datetime.date.today()}"
    )
    print(
        "| windows from | frames/s | speed-up | seconds | held-out next-frame accuracy |\n|---|---:|---:|---:|---:|"
    )
    for name, rate, seconds, accuracy in rows:
        print(f"| {name} | {rate:.0f} | {rate / rows[0][1]:.2f}× | {seconds:.1f} | {accuracy:.3f} |")
    print(f"\nbuilding the cache took {cache_seconds:.1f} s (once per tokenizer)")


if __name__ == "__main__":
    main()
