"""What one ``aime-rl`` command does to a run directory, in the order that keeps runs trustworthy:

1. build the settings (a new run: defaults ← the built-in experiment — ``demo.toml``, with the Atari recipe over it
   for an Atari game — ← ``--config`` ← flags; an existing run: its ``config.json`` ← what the user set explicitly)
   and validate every one of them, the env included;
2. check the command's prerequisites (``train-context`` needs a trained tokenizer, ...);
3. only then write: ``config.json`` of a new run, the outputs ``--restart`` discards, the stage's outputs;
4. a command that fails leaves nothing behind in a run directory it created — unless a stage had begun there: a
   first ``demo`` stopped at its probe, or interrupted while training, keeps what it made, and a plain rerun
   resumes it.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..envs import resolve_env
from ..experiments import is_shipped, resolve_config
from ..perception.presets import PRESET_ALIASES, resolve_preset
from ..utils.io import atomic_write, atomic_write_json
from .config import STAGES, RunConfig, check_name, default_values, layer, load_toml
from .environment import check_env
from .lock import RunLock
from .report import print_summary, write_report
from .rundir import RunDir, file_sha256, reconcile, weights_fingerprint
from .stages import (
    check_agent_kwargs,
    collect,
    evaluate,
    probe,
    probe_inputs,
    probe_is_current,
    probe_summary,
    require_done,
    seed_everything,
    train_agent_stage,
    train_context_stage,
    train_tokenizer_stage,
    train_world_model_stage,
    unknown_state,
)

COMMAND_STAGE = {
    "collect": "collect",
    "train-tokenizer": "tokenizer",
    "train-context": "context",
    "train-world-model": "world_model",
    "train-agent": "agent",
    "evaluate": "evaluate",
    "probe": "probe",
    "demo": "collect",
}
ENV_COMMANDS = ("collect", "train-agent", "evaluate", "probe", "demo")
#: Deprecated command names → the current name (they still work; the CLI prints a one-line notice).
COMMAND_ALIASES = {"train-perceiver": "train-context"}


def canonical_command(command: str) -> str:
    """``command``, or the current name of a deprecated alias (with a ``DeprecationWarning``)."""
    if command in COMMAND_ALIASES:
        new = COMMAND_ALIASES[command]
        warnings.warn(
            f"the {command!r} command is now called {new!r}; {command!r} is a deprecated alias",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    return command


@dataclass
class Options:
    """What a command takes besides the run's settings."""

    quick: bool = False
    restart: bool = False
    in_imagination: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    #: the ``--config`` given, if any: a shipped experiment (``demo``, ``atari``) is a new run's whole base, where
    #: a file of one's own is laid over the built-in experiment of the run's kind of env (:func:`starts_from_atari`)
    config: str | None = None


def starts_from_atari(explicit: dict[str, Any], options: Options) -> bool:
    """Whether a new run starts from the Atari recipe (``aime_rl/experiments/atari.toml``): its env is an Atari game,
    and neither ``--quick`` nor a shipped experiment (``--config demo``) chose its base. Cheap: makes no env."""
    if options.quick or (options.config is not None and is_shipped(resolve_config(options.config))):
        return False
    try:
        return resolve_env(explicit.get("env", default_values()["env"])).atari is not None
    except ValueError:  # an unknown env: check_env names it, with close matches
        return False


def shipped_env(options: Options) -> str | None:
    """The ``env`` line of the shipped experiment ``--config`` names (``atari``: ``"pong"``), if it names one."""
    if options.config is None or not is_shipped(path := resolve_config(options.config)):
        return None
    return load_toml(path).get("env")


def base_values(explicit: dict[str, Any], options: Options) -> dict[str, Any]:
    """What a new run's explicit settings are laid over (:func:`~aime_rl.pipeline.config.default_values`).

    Under the Atari recipe a ``--frame-size`` given without ``--frame-height`` means square frames, as it does
    everywhere else: the recipe's 96-pixel height is for its own 80-pixel width."""
    atari = starts_from_atari(explicit, options)
    values = default_values(options.quick, atari=atari)
    if atari and "frame_size" in explicit and "frame_height" not in explicit:
        values["frame_height"] = 0
    return values


def prepare(
    command: str, explicit: dict[str, Any], options: Options
) -> tuple[RunConfig, RunDir, list[str], bool]:
    """Validated settings, the run directory, the stages to discard, and whether the run is new. Writes nothing."""
    command = canonical_command(command)
    if explicit.get("preset") in PRESET_ALIASES:  # "seed" → "paper": the same preset, not a change of the run
        explicit["preset"] = resolve_preset(explicit["preset"], stacklevel=2)
    base = base_values(explicit, options)
    run = locate_run(explicit, options)
    stored = run.stored_config()
    if stored is not None and "env" in explicit and explicit["env"] == shipped_env(options):
        explicit.pop("env")  # the experiment's example game, not this run's (nor one to probe instead)
    stage = COMMAND_STAGE[command]
    if command == "probe":  # --env / --window choose what to probe; they do not change the run
        options.extra = {k: explicit.pop(k) for k in ("env", "window") if k in explicit}
    if stored is None:
        config = RunConfig.from_dict(layer(base, explicit), "the settings")
        discard: list[str] = []
    else:
        changes = {k: v for k, v in explicit.items() if k not in ("name", "runs_dir")}
        config, discard = reconcile(stored, changes, run, stage, options.restart or False)
        if command == "demo" and options.restart:
            discard = list(dict.fromkeys(COMMAND_STAGE.values()))
    if (
        options.extra
    ):  # what the probe reads instead of the run's own: checked as any setting, before any work
        RunConfig.from_dict({**config.to_dict(), **options.extra}, "the settings")
    if command in ENV_COMMANDS:
        algo = config.algo if command in ("train-agent", "demo") else None
        check_env(replace(config, **options.extra), algo)
    if stored is None or {"algo", "agent_kwargs"} & set(explicit) or command in ("train-agent", "demo"):
        check_agent_kwargs(config.algo, config.agent_kwargs, run)  # a typo is never stored in a run
    check_prerequisites(command, run, options, discard)
    return config, run, discard, stored is None


def locate_run(explicit: dict[str, Any], options: Options) -> RunDir:
    """The run directory the settings name (``--runs-dir`` / ``--name``), the name checked; nothing is created."""
    base = default_values(options.quick)
    name = explicit.get("name", base["name"])
    check_name(name)
    return RunDir(Path(explicit.get("runs_dir", base["runs_dir"])) / name)


def check_prerequisites(command: str, run: RunDir, options: Options, discard: list[str]) -> None:
    """The stages a command needs must have finished (and not be about to be discarded)."""
    needs = {
        "train-tokenizer": [("collect", "collect")],
        "train-context": [("tokenizer", "train-tokenizer")],
        "train-world-model": [("context", "train-context")],
        "train-agent": [("context", "train-context")]
        + ([("world_model", "train-world-model")] if options.in_imagination else []),
        "evaluate": [("agent", "train-agent")],
        "probe": [("context", "train-context")],
    }.get(command, [])
    for stage, stage_command in needs:
        if stage == "collect":
            if run.manifest("collect") is None or stage in discard:
                raise ValueError(
                    f"run {run.path.name!r} has no replay: run `{run.command_line('collect')}` first"
                )
        else:
            require_done(run, stage, stage_command)


def run_command(command: str, explicit: dict[str, Any], options: Options) -> Any:
    """Lock the run, prepare, then write and run; a run directory this command created is removed if it fails
    before any stage began (a stage's manifest marks it: what a stage made is kept, to resume).

    The run's lock (:class:`~aime_rl.pipeline.lock.RunLock`) is held from before its settings are read until the
    command ends, so a second command on the same run stops with :class:`~aime_rl.pipeline.lock.RunInUseError`
    before it reads or writes anything.
    """
    command = canonical_command(command)
    run = locate_run(explicit, options)
    made = [p for p in (run.path, *run.path.parents) if not p.exists()]  # what a failure removes again
    run.path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run.path, f"aime-rl {command}").acquire()  # a run in use is not ours to remove
    try:
        atari = starts_from_atari(explicit, options)
        config, run, discard, new = prepare(command, explicit, options)
        if new and atari:
            print(
                f"aime-rl {command}: {config.env} is an Atari game: the run starts from the Atari recipe "
                "(aime_rl/experiments/atari.toml, docs/atari.md); `--config demo` starts it from the demo's "
                "Catch settings instead",
                flush=True,
            )
        previous = None if new else run.config_path.read_bytes()
        removed = run.set_aside(discard)
        if removed:
            print(f"aime-rl {command}: --restart discarded {', '.join(removed)}", flush=True)
        # what is made from now on follows these settings, also when it is interrupted and resumed by a plain rerun
        atomic_write_json(run.config_path, config.to_dict())
        seed_everything(config)
        try:
            result = dispatch(command, replace(config, **options.extra), run, options)
        except Exception:  # not an interrupt: a stopped command resumes from what it trained so far
            if not (removed and undo_restart(command, run, discard)) and previous is not None:
                atomic_write(run.config_path, lambda tmp: Path(tmp).write_bytes(previous))
            raise
        run.drop_aside()
        return result
    except BaseException:
        lock.release()  # first: an open lock file cannot be deleted on every platform
        if not any(run.manifest_path(stage).exists() for stage in STAGES):
            remove_made(made)
        elif made:
            print(
                f"aime-rl {command}: {run.path} keeps what its stages made: the command run again resumes it "
                "(with the setting that failed changed, if one did; --restart starts it afresh)",
                flush=True,
            )
        raise
    finally:
        lock.release()


def undo_restart(command: str, run: RunDir, discard: list[str]) -> bool:
    """After a failed ``--restart``: put back what it discarded, unless it had already redone a stage — the demo's
    earlier stages — whose outputs the old later ones would no longer match. True when the new outputs (and so the
    new settings) stay."""
    redone = [stage for stage in discard if (run.manifest(stage) or {}).get("status") == "done"]
    if redone:
        run.drop_aside()
        print(f"aime-rl {command}: failed after redoing {', '.join(redone)}, which the run keeps", flush=True)
        return True
    run.restore_aside(discard)
    print(f"aime-rl {command}: failed; restored the run as it was before --restart", flush=True)
    return False


def remove_made(made: list[Path]) -> None:
    """Remove the run directory a failed command created, and the parents it created if they are empty now."""
    if not made:
        return
    shutil.rmtree(made[0], ignore_errors=True)
    for parent in made[1:]:
        try:
            parent.rmdir()
        except OSError:  # another run lives there now
            return


def dispatch(command: str, config: RunConfig, run: RunDir, options: Options) -> Any:
    if command == "collect":
        return collect(config, run, progress=options.progress)
    if command == "train-tokenizer":
        return train_tokenizer_stage(config, run)
    if command == "train-context":
        return train_context_stage(config, run)
    if command == "train-world-model":
        return train_world_model_stage(config, run)
    if command == "train-agent":
        return train_agent_stage(config, run, options.in_imagination, progress=options.progress)
    if command == "evaluate":
        return evaluate(config, run, progress=options.progress)
    if command == "probe":
        return probe(config, run, progress=options.progress)
    if command == "demo":
        return run_demo(config, run, options.progress, quick=bool(options.quick))
    raise ValueError(f"unknown command {command!r}")


def run_demo(config: RunConfig, run: RunDir, progress: bool = True, quick: bool = False) -> dict[str, Any]:
    """collect → tokenizer → context model → agent → probe → evaluate, then a summary (with what the context
    knows of the env's state, beside the baselines). A stage already done is skipped; so are the probe and the
    evaluation when the weights and the settings they measure are those of the last demo's report (the summary is
    then that report's), and the probe when ``aime-rl probe`` knows no true state of the env (it says so). ``quick``:
    a ``demo --quick`` run, whose summary says its numbers are a smoke run's."""
    start = time.time()
    print(f"aime-rl demo: {config.env} with the {config.preset!r} preset → {run.path}", flush=True)
    steps = [
        (
            "collect",
            f"collecting {config.collect_steps} random-policy steps",
            lambda: collect(config, run, progress=progress),
        ),
        (
            "tokenizer",
            f"training the tokenizer ({config.tokenizer_steps} steps"
            + (f", then {config.decoder_steps} of its decoder alone)" if config.decoder_steps else ")"),
            lambda: train_tokenizer_stage(config, run),
        ),
        (
            "context model",
            f"training the context model ({config.context_steps} steps)",
            lambda: train_context_stage(config, run),
        ),
        (
            "agent",
            f"training {config.algo.upper()} on the context for {config.agent_steps} steps",
            lambda: train_agent_stage(config, run, progress=progress),
        ),
        (
            "probe",
            f"probing what the context knows ({config.probe_steps} random-policy frames)",
            lambda: probe(config, run, progress=progress, verbose=False),
        ),
        (
            "evaluation",
            f"evaluating on {config.eval_episodes} episodes",
            lambda: evaluate(config, run, progress=progress),
        ),
    ]
    seconds: dict[str, float] = {}  # each stage's time in this demo (a stage already done takes a moment)

    def run_step(i: int, label: str, what: str, stage: Callable[[], Any], skip: str | None = None) -> Any:
        """Run one stage, or say why it is not run (``skip``: its result is current, or it cannot run here)."""
        if skip is None or skip == unchanged:
            print(f"[{i}/{len(steps)}] {what}{f' ({skip})' if skip else ''}", flush=True)
        else:
            print(f"[{i}/{len(steps)}] {label} skipped: {skip}", flush=True)
        began = time.time()
        result = None if skip else stage()
        seconds[label] = round(time.time() - began, 1)
        return result

    unchanged = "done: nothing it measures changed"
    measured = len(steps) - 2  # the probe and the evaluation measure what the stages before them made
    for i, step in enumerate(steps[:measured], 1):
        report = run_step(i, *step)
    inputs = measurement_inputs(config, run)
    cached = cached_report(run, inputs)
    if cached is not None and cached.get("probe_skipped") and unknown_state(config) is None:
        cached = None  # not probed then, and this version knows the env's state: measured now
    # a probe made since (`aime-rl probe`, e.g. on more frames) of these weights and settings is not made again
    probe_skip = unchanged if cached is not None or probe_is_current(config, run) else None
    no_state = None if probe_skip is not None else unknown_state(config)
    if no_state is not None:
        probe_skip = no_state
    skips = [probe_skip, unchanged if cached is not None else None]
    for i, (step, skip) in enumerate(zip(steps[measured:], skips, strict=True), measured + 1):
        report = run_step(i, *step, skip=skip) or report
    if cached is not None:
        print_summary(run.path, cached, reused=True, probe_command=run.command_line("probe"), quick=quick)
        return cached
    probed = run.path / "probe.json"
    report["probe"] = probe_summary(probed)
    if no_state is not None:
        report["probe_skipped"] = no_state
    report["seconds"] = round(time.time() - start, 1)
    report["stage_seconds"] = seconds
    write_report(run.path, report)
    record = {"report": file_sha256(run.path / "report.json")}
    if probed.is_file():
        record["probe"] = file_sha256(probed)
    run.write_manifest("evaluate", {"status": "done", "inputs": inputs, "outputs": record})
    print_summary(run.path, report, probe_command=run.command_line("probe"), quick=quick)
    return report


def measurement_inputs(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """What the demo's probe and evaluation depend on: the weights they measure and the settings they use (the
    probe's, :func:`~aime_rl.pipeline.stages.probe_inputs`, and the evaluation's)."""
    probed = probe_inputs(config, run)
    return {
        **probed,
        "tokenizer": weights_fingerprint(run.path / "tokenizer" / "model"),  # its decoder: the summary's PSNR
        "agent": file_sha256(run.path / "agent" / "agent.zip"),
        "settings": {**probed["settings"], "eval_episodes": config.eval_episodes},
    }


def cached_report(run: RunDir, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The report of an earlier demo on this run when it measured exactly ``inputs`` and its ``report.json`` and
    ``probe.json`` (where it made one) are still the files it wrote (``stages/evaluate.json`` records both), so that a
    rerun of a finished demo prints its summary again instead of measuring the same thing twice; None otherwise."""
    manifest = run.manifest("evaluate") or {}
    outputs = manifest.get("outputs", {})
    # the probe's file where the demo made one (an env without a known state has none)
    files = {
        name: run.path / f"{name}.json" for name in ("report", "probe") if name == "report" or name in outputs
    }
    if manifest.get("inputs") != inputs or not all(path.is_file() for path in files.values()):
        return None
    if any(outputs.get(name) != file_sha256(path) for name, path in files.items()):
        return None
    try:
        return json.loads(files["report"].read_text())
    except (OSError, ValueError):
        return None
