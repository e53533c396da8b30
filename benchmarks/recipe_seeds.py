"""The whole command-line recipe once per seed: how far one trained model's probe score is from the recipe's.

A trained model is a draw (``benchmarks/README.md``, tenth and eleventh sessions): on Pong, three seeds of the same
recipe span 0.02 of the AtariARI score, the size of most differences this README compares. This runs the recipe a
user runs (``aime-rl collect``, ``train-tokenizer``, ``train-context``, ``probe``) in one run directory per seed,
then prints each seed's probe score per representation and their mean, min and max beside the paper's row.

    python benchmarks/recipe_seeds.py --env pong --seeds 0 1 2 [--frame-size 80] [--frame-height 96]
        [--collect-steps 12000] [--tokenizer-steps 1200] [--context-steps 300] [--probe-steps 50000]
        [--probe-episode-steps 200] [--representations context,untrained,random_cnn,majority]
        [--predictor-kwarg KEY=VALUE ...] [--runs-dir /tmp/recipe_seeds] [--jobs 1] [--device cpu] [--json PATH]

The stages keep their outputs, so a second call with the same ``--runs-dir`` skips what is done (a killed run goes
on where it stopped; a probe of the same model and settings is read back, not run again). ``--jobs N`` runs N seeds
at once (each stage's threads are divided between them). The defaults are the shipped Atari recipe
(``aime_rl/experiments/atari.toml``, ``--config atari``; ``docs/atari.md``): 96 × 80 frames, about Atari's
210 × 160 screen shape (``--frame-height 0`` gives square ``--frame-size`` frames), 12 000 frames, 1200 + 300
steps, no motion bonus, one next-frame decode per clip and step. ``--predictor-kwarg`` (repeatable) changes one of
the recipe's context-model settings, as ``aime-rl train-context --predictor-kwarg`` does; use a fresh ``--runs-dir``
for each setting compared (a finished run's model is not trained again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aime_rl.evaluation import ProbeReport
from aime_rl.experiments import experiment_path
from aime_rl.pipeline import load_toml

RECIPE = load_toml(experiment_path("atari"))  # the defaults: `--config atari`, the recipe docs/atari.md gives


def run_name(env: str, seed: int) -> str:
    """The run directory's name: ``pong_s0``; an id like ``ALE/Boxing-v5`` gives ``Boxing-v5_s0``."""
    return f"{env.split('/')[-1]}_s{seed}"


def stage_commands(args: argparse.Namespace, seed: int) -> list[list[str]]:
    """The CLI calls of one seed's run, in order."""
    run = ["--runs-dir", str(args.runs_dir), "--name", run_name(args.env, seed)]
    cli = [sys.executable, "-m", "aime_rl.cli"]
    return [
        cli
        + ["collect", *run, "--config", "atari", "--env", args.env, "--seed", str(seed)]
        + ["--frame-size", str(args.frame_size)]
        + ["--frame-height", str(args.frame_height)]
        + ["--collect-steps", str(args.collect_steps), "--device", args.device],
        cli + ["train-tokenizer", *run, "--tokenizer-steps", str(args.tokenizer_steps)],
        cli
        + ["train-context", *run, "--context-steps", str(args.context_steps)]
        + [flag for kwarg in args.predictor_kwarg for flag in ("--predictor-kwarg", kwarg)],
        cli
        + ["probe", *run, "--probe-steps", str(args.probe_steps)]
        + ["--probe-episode-steps", str(args.probe_episode_steps)]
        + ["--probe-representations", args.representations],
    ]


def probed_already(args: argparse.Namespace, run: Path) -> bool:
    """Whether ``run/probe.json`` probed the current model with these settings (``aime-rl probe``, an evaluation,
    always probes again; 50 000 frames take minutes)."""
    probe, weights = run / "probe.json", run / "model" / "model.safetensors"
    if not (probe.exists() and weights.exists()) or probe.stat().st_mtime < weights.stat().st_mtime:
        return False
    report = ProbeReport.from_json(probe)
    asked = args.representations.split(",")
    return report.num_frames == args.probe_steps and report.metadata.get("representations") == asked


def run_seed(args: argparse.Namespace, seed: int, threads: int) -> ProbeReport:
    """Run (or finish) one seed's recipe; its log is ``<runs-dir>/<env>_s<seed>.log``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    run = Path(args.runs_dir) / run_name(args.env, seed)
    log_path = run.with_name(run.name + ".log")
    with open(log_path, "a") as log:
        for command in stage_commands(args, seed):
            if command[3] == "probe" and probed_already(args, run):
                continue
            log.write(f"$ {' '.join(command[1:])}\n")
            log.flush()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"seed {seed}: `aime-rl {command[3]}` failed, see {log_path}")
    return ProbeReport.from_json(run / "probe.json")


def markdown_table(reports: dict[int, ProbeReport]) -> str:
    """One row per representation: the score of each seed, then their mean, min and max."""
    seeds = list(reports)
    names = list(next(iter(reports.values())).representations)
    lines = [
        "| representation | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | min | max |",
        "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: | ---: |",
    ]
    for name in names:
        scores = [reports[s].score(name) for s in seeds]
        cells = [f"{x:.3f}" for x in scores]
        cells += [f"**{statistics.mean(scores):.3f}**", f"{min(scores):.3f}", f"{max(scores):.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    reference = next(iter(reports.values())).reference()
    for row, values in reference.items():
        lines.append(f"\nAtariARI Table 2, {row}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=RECIPE["env"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frame-size", type=int, default=RECIPE["frame_size"])
    parser.add_argument(
        "--frame-height",
        type=int,
        default=RECIPE["frame_height"],
        help="96 × 80 keeps about Atari's 210 × 160 shape; 0: square frames",
    )
    parser.add_argument("--collect-steps", type=int, default=RECIPE["collect_steps"])
    parser.add_argument("--tokenizer-steps", type=int, default=RECIPE["tokenizer_steps"])
    parser.add_argument("--context-steps", type=int, default=RECIPE["context_steps"])
    parser.add_argument(
        "--probe-steps", type=int, default=RECIPE["probe_steps"], help="AtariARI's probes learn from 50 000"
    )
    parser.add_argument("--probe-episode-steps", type=int, default=RECIPE["probe_episode_steps"])
    parser.add_argument("--representations", default=RECIPE["probe_representations"])
    parser.add_argument(
        "--predictor-kwarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a context-model setting over the recipe's, e.g. copy_logit=3 (repeatable; given to train-context)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/recipe_seeds"))
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write every seed's probe report here")
    args = parser.parse_args()
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {seed: pool.submit(run_seed, args, seed, threads) for seed in args.seeds}
        reports = {seed: future.result() for seed, future in futures.items()}
    print(
        f"{args.env} at {args.frame_height or args.frame_size}×{args.frame_size}: {args.collect_steps} frames, "
        f"{args.tokenizer_steps} + {args.context_steps} steps; probes on {args.probe_steps} frames\n"
    )
    print(markdown_table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps({s: r.to_dict() for s, r in reports.items()}, indent=2))


if __name__ == "__main__":
    main()
