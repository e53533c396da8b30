"""The ``aime-rl`` command: the pipeline, stage by stage, on one run directory ``<runs-dir>/<name>``.

    aime-rl collect            random policy → replay (a target size: a rerun tops it up)
    aime-rl train-tokenizer    replay → tokenizer
    aime-rl train-context      replay + tokenizer → context model (saves <run>/model)
    aime-rl train-world-model  replay + context model → VRNN world model
    aime-rl train-agent        SB3 agent on the causal context (or --in-imagination, inside the world model)
    aime-rl evaluate           agent vs random policy → report.json / report.md
    aime-rl probe              linear probes of what the context knows → probe.json / probe.md
    aime-rl demo [--quick]     collect → train-tokenizer → train-context → train-agent → probe → evaluate on the
                               built-in Catch env, with a summary

The first command on a run writes its ``config.json``; later commands read it, and a flag that contradicts a
setting the run's outputs were made with is refused (``--restart`` redoes the stage and what follows). Re-running a
finished stage is a no-op that says so. Every failure is one line on stderr and exit status 2 (``--debug`` shows
the traceback). ``train-perceiver`` (now ``train-context``) and ``--preset seed`` (now ``paper``) still work and
print a one-line deprecation notice.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .experiments import EXPERIMENTS_DIR, is_shipped, resolve_config
from .perception.presets import PRESET_ALIASES
from .pipeline import COMMAND_ALIASES, COMMANDS, Options, RunConfig, RunInUseError, load_toml, run_command
from .pipeline.config import KWARG_SETTINGS, default_values

__all__ = ["COMMANDS", "COMMAND_ALIASES", "EXPERIMENTS_DIR", "main", "make_parser", "explicit_settings"]


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``aime-rl collect: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def package_version() -> str:
    try:
        return version("aime-rl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
        return "unknown"


def keyword_argument(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a TOML value (``n_steps=64``, ``gamma=0.95``, ``policy_kwargs={net_arch=[64, 64]}``);
    a value that is not TOML is taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def preset_name(text: str) -> str:
    """``--preset``'s value; the deprecated ``seed`` becomes ``paper`` with a one-line notice on stderr."""
    if text in PRESET_ALIASES:
        new = PRESET_ALIASES[text]
        print(
            f"aime-rl: --preset {text} is deprecated, use --preset {new} (the same preset)", file=sys.stderr
        )
        return new
    return text


def describe(f, defaults: dict[str, Any], atari_defaults: dict[str, Any]) -> str:
    """A flag's help: its meaning, its default — and the Atari recipe's, where a new run of an Atari game starts
    from another value — and its choices."""
    text = f"{f.metadata['help']} (default: {defaults[f.name]!r}"
    if atari_defaults[f.name] != defaults[f.name]:
        text += f"; an Atari game's: {atari_defaults[f.name]!r}"
        if f.name == "frame_height":  # --frame-size alone means a square frame under either recipe
            text += " unless --frame-size is given"
    if f.metadata.get("choices"):
        text += f"; choices: {', '.join(f.metadata['choices'])}"
    return text + ")"


def add_settings(
    parser: argparse.ArgumentParser, command: str, defaults: dict[str, Any], atari_defaults: dict[str, Any]
) -> None:
    """The :class:`RunConfig` fields ``command`` uses, as flags with their meaning, default (and the Atari
    recipe's) and choices."""
    for f in fields(RunConfig):
        if command != "demo" and command not in f.metadata["commands"]:
            continue
        if f.name in KWARG_SETTINGS:
            add_kwarg_settings(parser, f)
            continue
        name = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(
                name,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=describe(f, defaults, atari_defaults),
            )
        else:
            kind = preset_name if f.name == "preset" else {"int": int, "float": float, "str": str}[f.type]
            choices = f.metadata.get("choices")
            parser.add_argument(
                name,
                dest=f.name,
                type=kind,
                choices=choices,
                metavar=f.name.upper(),
                help=describe(f, defaults, atari_defaults),
            )


def add_kwarg_settings(parser: argparse.ArgumentParser, f) -> None:
    """A table of keyword arguments (:data:`KWARG_SETTINGS`) as a repeatable ``--agent-kwarg KEY=VALUE`` flag."""
    parser.add_argument(
        "--" + f.name.removesuffix("s").replace("_", "-"),
        dest=f.name,
        type=keyword_argument,
        action="append",
        metavar="KEY=VALUE",
        help=f"{f.metadata['help']} (repeatable)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="aime-rl",
        description=__doc__.split("\n\n")[0],
        epilog="`aime-rl <command> --help` lists a command's settings.",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aime-rl {package_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser, metavar="{" + ",".join(COMMANDS) + "}"
    )
    defaults, atari_defaults = default_values(), default_values(atari=True)
    for alias in (*COMMANDS, *COMMAND_ALIASES):
        name = COMMAND_ALIASES.get(alias, alias)
        if alias == name:
            p = sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name], allow_abbrev=False)
        else:  # a deprecated name: works, but is not listed in `aime-rl --help`
            description = f"deprecated name of `aime-rl {name}`: {COMMANDS[name]}"
            p = sub.add_parser(alias, description=description, allow_abbrev=False)
        p.add_argument(
            "--config",
            help="TOML file of settings laid over the defaults (flags override it), or a shipped experiment as the "
            "whole base (atari, demo, quick; an Atari game starts from atari without it)",
        )
        p.add_argument(
            "--restart",
            action="store_true",
            help="discard this stage's outputs (and everything made from them) and redo it, with new settings",
        )
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        add_settings(p, name, defaults, atari_defaults)
        if name == "demo":
            p.add_argument(
                "--quick", action="store_true", help="tiny preset: a 30-second smoke run of the pipeline"
            )
            p.add_argument("--logdir", dest="runs_dir", help="same as --runs-dir")
        if name == "train-agent":
            p.add_argument(
                "--in-imagination",
                action="store_true",
                help="train only inside the world model (needs train-world-model first)",
            )
    return parser


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the user set: the ``--config`` file's values, then the flags given on the command line.

    A shipped experiment's frame height goes with its frame size: ``--config atari --frame-size 64`` is 64×64, as
    ``--frame-size 64`` alone is under the Atari recipe an Atari game gets by default."""
    path = resolve_config(args.config) if args.config else None
    values = load_toml(path) if path else {}
    if (
        path
        and is_shipped(path)
        and getattr(args, "frame_size", None)
        and not getattr(args, "frame_height", None)
    ):
        values.pop("frame_height", None)
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in KWARG_SETTINGS:
            value = {**values.get(f.name, {}), **dict(value)}
        values[f.name] = value
    return values


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line parsed; a flag the command does not have is reported by the command itself (``aime-rl
    collect: error: unrecognized arguments: --colect-steps 5 (did you mean --collect-steps?)``), exit status 2."""
    parser = make_parser()
    words = sys.argv[1:] if argv is None else argv
    command = next((word for word in words if not word.startswith("-")), None)
    if command is not None and command not in COMMANDS and command not in COMMAND_ALIASES:
        guess = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        parser.error(f"unknown command {command!r}{hint}; the commands: {', '.join(COMMANDS)}")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = command_parser(parser, args.command)
        flags = [option for action in command._actions for option in action.option_strings]
        guess = (
            difflib.get_close_matches(unknown[0].split("=")[0], flags, n=1)
            if unknown[0].startswith("--")
            else []
        )
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` in :func:`make_parser`'s ``parser``."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.command in COMMAND_ALIASES:
        old, args.command = args.command, COMMAND_ALIASES[args.command]
        print(
            f"aime-rl {old}: deprecated, now called `aime-rl {args.command}` (the same command)",
            file=sys.stderr,
        )
    options = Options(
        quick=getattr(args, "quick", False),
        restart=args.restart,
        in_imagination=getattr(args, "in_imagination", False),
        config=args.config,
    )
    try:
        run_command(args.command, explicit_settings(args), options)
    except KeyboardInterrupt:
        print(f"aime-rl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"aime-rl {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def one_line(err: BaseException) -> str:
    if isinstance(err, (ValueError, RunInUseError)):
        text = str(err)
    elif isinstance(err, OSError):
        text = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    else:
        text = f"{type(err).__name__}: {err} (--debug shows the traceback)"
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
