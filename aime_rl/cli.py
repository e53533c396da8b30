"""The ``aime-rl`` command.

Every command reads its settings from a TOML file (``--config experiments/demo.toml``; the demo's file is the
default) and command-line overrides (``--preset tiny --agent-steps 5000``), and writes under
``<runs-dir>/<name>/``::

    aime-rl collect            random policy → replay store
    aime-rl train-tokenizer    replay → tokenizer              (saves <run>/model)
    aime-rl train-perceiver    replay → context model          (loads and saves <run>/model)
    aime-rl train-world-model  replay → VRNN world model       (saves <run>/world_model/world_model)
    aime-rl train-agent        SB3 agent on the causal context (saves <run>/agent/agent.zip);
                               --in-imagination: trained only inside the learned world model
    aime-rl evaluate           agent vs random returns + perception metrics → report.json / report.md
    aime-rl demo [--quick] [--logdir DIR]   all of the above, on the built-in Catch env
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from .training.pipeline import RunConfig

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"  # the repository's experiments/

COMMANDS: dict[str, str] = {
    "collect": "collect random-policy frames, actions and rewards into <run>/replay",
    "train-tokenizer": "train the VQ video tokenizer on <run>/replay and save <run>/model",
    "train-perceiver": "train the causal context model (tokenizer frozen) and save <run>/model",
    "train-world-model": "train the VRNN world model (DPGMM prior) on <run>/replay with the frozen perception model",
    "train-agent": "train an SB3 agent (ppo/a2c/dqn/sac) on the causal context of the env (or in imagination)",
    "evaluate": "evaluate <run>/agent/agent.zip against a random policy; write report.json and report.md",
    "demo": "the whole pipeline on the built-in env, ending with a short summary",
}


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML experiment file; a missing or malformed file raises ``ValueError`` naming it."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"invalid TOML in {path}: {err}") from err


def experiment_path(name: str) -> Path:
    """``experiments/<name>.toml`` shipped with the package."""
    return EXPERIMENTS / f"{name}.toml"


def build_config(args: argparse.Namespace) -> RunConfig:
    """Defaults ← TOML file ← command-line flags."""
    default = experiment_path("quick" if getattr(args, "quick", False) else "demo")
    values = load_toml(args.config or default)
    unknown = set(values) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ValueError(f"unknown settings in {args.config or default}: {sorted(unknown)}")
    for f in dataclasses.fields(RunConfig):
        flag = getattr(args, f.name, None)
        if flag is not None:
            values[f.name] = flag
    if getattr(args, "logdir", None):
        values["runs_dir"] = args.logdir
    return RunConfig(**values)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML experiment file (default: the demo's)")
    for f in dataclasses.fields(RunConfig):
        if f.type in ("int", "float", "str", int, float, str):
            kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, help=f"override {f.name}"
            )
        elif f.type in ("bool", bool):
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"override {f.name}",
            )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aime-rl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_flags(p)
        if name == "demo":
            p.add_argument(
                "--quick", action="store_true", help="tiny preset: a smoke run of the whole pipeline"
            )
            p.add_argument("--logdir", help="where runs are written (default: runs/)")
        if name == "train-agent":
            p.add_argument(
                "--in-imagination",
                action="store_true",
                help="train only inside WorldModelEnv (needs train-world-model first)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        config = build_config(args)
        run_command(args.command, config, args)
    except ValueError as err:
        print(f"aime-rl {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def run_command(command: str, config: RunConfig, args: argparse.Namespace) -> None:
    from .training import pipeline

    pipeline.save_run_config(config)
    model_dir = config.run_dir / "model"
    if command == "demo":
        pipeline.run_demo(config)
    elif command == "collect":
        store = pipeline.collect(config)
        print(f"{store.num_steps} steps in {len(store)} episodes → {config.run_dir / 'replay'}")
    elif command == "train-tokenizer":
        model = pipeline.build_model(config)
        metrics = pipeline.train_tokenizer(
            model.tokenizer,
            config.run_dir / "replay",
            pipeline.trainer_config(config, config.tokenizer_steps),
            config.run_dir / "tokenizer",
        )
        model.save_pretrained(model_dir)
        print(f"tokenizer: {pipeline.summarize(metrics)} → {model_dir}")
    elif command == "train-perceiver":
        model = _load_model(model_dir) if model_dir.exists() else pipeline.build_model(config)
        metrics = pipeline.train_context_model(
            model,
            config.run_dir / "replay",
            pipeline.trainer_config(config, config.context_steps),
            config.run_dir / "context_model",
        )
        model.save_pretrained(model_dir)
        print(f"context model: {pipeline.summarize(metrics)} → {model_dir}")
    elif command == "train-world-model":
        pipeline.train_world_model_stage(
            config, _require(model_dir, "run train-tokenizer and train-perceiver first")
        )
        print(f"world model → {pipeline.world_model_dir(config)}")
    elif command == "train-agent":
        _require(model_dir, "run train-tokenizer and train-perceiver first")
        if args.in_imagination:
            _require(pipeline.world_model_dir(config), "run train-world-model first")
            pipeline.train_agent_in_imagination(config, model_dir)
        else:
            pipeline.train_agent(config, model_dir)
        print(f"agent → {config.run_dir / 'agent' / 'agent.zip'}")
    elif command == "evaluate":
        report = pipeline.evaluate(config, _require(model_dir, "train a model first"), _load_agent(config))
        print(
            f"report → {config.run_dir / 'report.md'}: agent {report['agent_return_mean']:.2f}, "
            f"random {report['random_return_mean']:.2f}"
        )


def _require(path: Path, hint: str) -> Path:
    if not path.exists():
        raise ValueError(f"{path} does not exist: {hint}")
    return path


def _load_model(model_dir: Path):
    from .perception import CausalPerceiverIO

    return CausalPerceiverIO.from_pretrained(model_dir)


def _load_agent(config: RunConfig):
    from stable_baselines3 import A2C, DQN, PPO, SAC

    algos = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}
    if config.algo not in algos:
        raise ValueError(f"algo must be one of {sorted(algos)}, got {config.algo!r}")
    return algos[config.algo].load(_require(config.run_dir / "agent" / "agent.zip", "run train-agent first"))


if __name__ == "__main__":
    raise SystemExit(main())
