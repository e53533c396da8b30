"""State probes (AtariARI protocol): what the context knows about Catch's and Pong's true state, beside baselines.

For each env, random-policy frames are collected and labelled (Catch: ball position and velocity, paddle, scored
by R² of a ridge probe; Pong: the AtariARI RAM variables, scored by weighted F1 of a 256-way linear probe), split
70/10/20 by episode, and every representation is probed on the same split (``aime_rl.evaluation.probe_model``):

- ``context``: the perception model's streamed context (``--catch-model`` / ``--pong-model``; for Catch without a
  model, the "small" preset is trained here for ``--train-steps`` tokenizer + context steps on a separate
  random-policy replay of ``--replay-steps`` frames; for Pong without a model, no ``context`` row);
- ``untrained``: a fresh model of the same configuration; ``random_cnn``: a random Nature-DQN CNN on 84×84;
  ``pixels`` / ``frame_stack``: the frame(s) at 32×32; ``majority``: the most frequent training value.

The paper's Table 2 row for Pong (and their 22-game mean) is printed beside the Pong table; their encoders see
one full 210×160 frame and far more data (and ST-DIM etc. are trained on Pong), so compare the ordering, not the
digits.

Usage: ``python benchmarks/probe.py [--quick] [--catch-model DIR] [--pong-model DIR] [--world-model DIR]
[--catch-steps N] [--pong-steps N] [--pong-episode-steps N] [--window W] [--train-steps N] [--replay-steps N]
[--max-epochs N] [--skip-catch] [--skip-pong] [--json PATH] [--threads N]``. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import (
    PAPER_REFERENCE,
    LabelledFrames,
    ProbeConfig,
    ProbeReport,
    catch_labels,
    collect_labelled,
    probe_model,
)
from aime_rl.evaluation.report import PAPER_METHODS, REPRESENTATION_TO_PAPER
from aime_rl.perception import CausalPerceiverIO

CATCH_ID = "aime_rl/Catch-v0"
PONG_ID = "ALE/Pong-v5"
BASELINES = ("untrained", "random_cnn", "pixels", "frame_stack", "majority")
SETTINGS = {
    "quick": dict(
        catch_steps=400, pong_steps=300, pong_episode_steps=60, train_steps=20, replay_steps=300, max_epochs=5
    ),
    "full": dict(
        catch_steps=5000,
        pong_steps=10000,
        pong_episode_steps=None,
        train_steps=600,
        replay_steps=8000,
        max_epochs=100,
    ),
}


def machine_info() -> str:
    return (
        f"{platform.platform()} · CPU {platform.processor() or platform.machine()} · Python "
        f"{platform.python_version()} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
        f"{datetime.date.today()}"
    )


def make_pong() -> gym.Env:
    import ale_py  # the optional Atari dependency

    gym.register_envs(ale_py)
    return gym.make(PONG_ID, frameskip=4, repeat_action_probability=0.25)


def windows(replay: LabelledFrames, batch: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """uint8 ``[batch, length, 3, H, W]`` windows inside episodes of ``replay``."""
    slices = [s for s in replay.episode_slices() if s.stop - s.start >= length]
    picks = rng.integers(len(slices), size=batch)
    out = []
    for i in picks:
        s = slices[i]
        start = int(rng.integers(s.start, s.stop - length + 1))
        out.append(replay.frames[start : start + length])
    return torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3).contiguous()


def train_catch_model(
    preset: str, steps: int, replay_steps: int, seed: int
) -> tuple[CausalPerceiverIO, float]:
    """Train ``preset`` on a random-policy Catch replay (not the probe data): tokenizer, then context model."""
    start = time.perf_counter()
    replay = collect_labelled(CATCH_ID, catch_labels, replay_steps, seed=seed + 1000)
    torch.manual_seed(seed)
    length = 8
    model = CausalPerceiverIO.from_preset(preset, video_shape=(length, 3, 64, 64), perceptual_weight=0.0)
    rng = np.random.default_rng(seed)
    tokenizer = model.tokenizer.train()
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=2e-3)
    for _ in range(steps):
        loss = tokenizer.loss(windows(replay, 8, 4, rng))["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictor = model.predictor.train()
    tokenizer.eval()  # frozen while the context model trains (tokenize() runs without gradients)
    optimizer = torch.optim.AdamW(predictor.trainable_parameters(), lr=1e-3)
    for _ in range(steps):
        loss = predictor(windows(replay, 8, length, rng), num_context_frames=length // 2)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), time.perf_counter() - start


def summary_table(reports: dict[str, ProbeReport]) -> str:
    """Scores side by side: one row per representation, one column per env, the paper's Pong/mean rows after."""
    names = list(dict.fromkeys(n for r in reports.values() for n in r.representations))
    lines = [
        "| representation | "
        + " | ".join(f"{env} ({'R²' if env == 'Catch' else 'F1'})" for env in reports)
        + " |",
        "| --- | " + " | ".join("---:" for _ in reports) + " |",
    ]
    for name in names:
        label = f"{name} ({REPRESENTATION_TO_PAPER[name]})" if name in REPRESENTATION_TO_PAPER else name
        cells = [
            f"{r.representations[name].score:.3f}" if name in r.representations else "–"
            for r in reports.values()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "AtariARI Table 2 (F1 averaged across categories; full 210×160 frames, trained encoders):",
        "",
    ]
    lines += ["| paper | " + " | ".join(PAPER_METHODS) + " |", "| --- |" + " ---: |" * len(PAPER_METHODS)]
    for row, values in PAPER_REFERENCE.items():
        lines.append(f"| {row} | " + " | ".join(f"{values[m]:.2f}" for m in PAPER_METHODS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run of a minute or two)")
    parser.add_argument(
        "--catch-model", help="CausalPerceiverIO directory for Catch (default: train one here)"
    )
    parser.add_argument("--pong-model", help="CausalPerceiverIO directory for Pong (default: baselines only)")
    parser.add_argument(
        "--world-model", help="VRNN directory on --catch-model: adds the belief row for Catch"
    )
    parser.add_argument(
        "--preset", default=None, help="preset trained without --catch-model (small; tiny if --quick)"
    )
    parser.add_argument("--catch-steps", type=int, help="labelled Catch frames")
    parser.add_argument("--pong-steps", type=int, help="labelled Pong frames")
    parser.add_argument("--pong-episode-steps", type=int, help="cut Pong episodes after N steps (short runs)")
    parser.add_argument("--train-steps", type=int, help="tokenizer and context steps when training a model")
    parser.add_argument(
        "--replay-steps", type=int, help="frames of the training replay when training a model"
    )
    parser.add_argument("--max-epochs", type=int, help="epoch limit of the linear classifiers")
    parser.add_argument("--window", type=int, default=16, help="context window (use the agent's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-catch", action="store_true")
    parser.add_argument("--skip-pong", action="store_true")
    parser.add_argument("--json", type=Path, help="also write {env: report} as JSON here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    for key in settings:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    preset = args.preset or ("tiny" if args.quick else "small")
    config = ProbeConfig(max_epochs=settings["max_epochs"], seed=args.seed)

    print(f"# State probes · {machine_info()}\n")
    reports: dict[str, ProbeReport] = {}
    if not args.skip_catch:
        if args.catch_model:
            model, origin = CausalPerceiverIO.from_pretrained(args.catch_model), args.catch_model
        else:
            model, seconds = train_catch_model(
                preset, settings["train_steps"], settings["replay_steps"], args.seed
            )
            origin = (
                f"'{preset}' preset trained here: {settings['train_steps']} tokenizer + context steps on "
                f"{settings['replay_steps']} replay frames ({seconds:.0f} s)"
            )
        start = time.perf_counter()
        reports["Catch"] = probe_model(
            model,
            CATCH_ID,
            steps=settings["catch_steps"],
            window=args.window,
            world_model=args.world_model,
            seed=args.seed,
            config=config,
        )
        print(f"## Catch · model: {origin} · {time.perf_counter() - start:.0f} s\n")
        print(reports["Catch"].to_markdown())
    if not args.skip_pong:
        if args.pong_model:
            model, names, origin = CausalPerceiverIO.from_pretrained(args.pong_model), None, args.pong_model
        else:
            torch.manual_seed(args.seed)
            model = CausalPerceiverIO.from_preset(preset, video_shape=(8, 3, 64, 64))
            names, origin = BASELINES, f"none (baselines; 'untrained' is the '{preset}' preset)"
        start = time.perf_counter()
        reports["Pong"] = probe_model(
            model,
            make_pong,
            steps=settings["pong_steps"],
            window=args.window,
            representations=names,
            seed=args.seed,
            max_episode_steps=settings["pong_episode_steps"],
            config=config,
        )
        print(f"## Pong · model: {origin} · {time.perf_counter() - start:.0f} s\n")
        print(reports["Pong"].to_markdown())
    if reports:
        print("## Summary (score = mean over categories)\n")
        print(summary_table(reports))
    if args.json:
        args.json.write_text(json.dumps({env: r.to_dict() for env, r in reports.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
