"""``report.json`` / ``report.md`` of a run, and the summary ``aime-rl demo`` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..utils.io import atomic_write, atomic_write_json

#: Probe frames below which the demo's summary says how to probe more: AtariARI's count, the benchmarks' Catch probe.
SHARP_PROBE_FRAMES = 50_000


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """``report.json`` (everything) and ``report.md`` (a table a person reads, with verdicts in words).
    ``report.json`` keeps the report's own order, so that a rerun's summary, read back from it, lists the probed
    representations and variables as the first run did (the context first, the variables as the env names them)."""
    atomic_write_json(run_dir / "report.json", report, sort_keys=False)
    text = "\n".join(report_lines(run_dir.name, report)) + "\n"
    atomic_write(run_dir / "report.md", lambda tmp: Path(tmp).write_text(text))


def report_lines(name: str, report: dict[str, Any]) -> list[str]:
    steps = report.get("steps", {})
    # a report written before frame_height existed is of square frames
    frame_height = report.get("frame_height") or report.get("frame_size")
    lines = [
        f"# aime-rl report: {name}",
        "",
        f"env `{report['env']}`, preset `{report['preset']}` at {frame_height}×{report.get('frame_size')}, "
        f"seed {report.get('seed')}; {steps.get('collect')} replay steps, tokenizer {steps.get('tokenizer')} and "
        f"context model {steps.get('context_model')} training steps, {report['algo'].upper()} for "
        f"{steps.get('agent')} env steps with a window of {report.get('window')} frames; "
        f"{report['episodes']} evaluation episodes"
        + f"; evaluation took {report.get('evaluation_seconds', 0):.0f} s"
        + (
            f", the whole run {report['seconds']:.0f} s{stage_times(report)}." if "seconds" in report else "."
        ),
        "",
        "| metric | value |",
        "|---|---|",
        f"| agent return ({report['algo']}) | {report['agent_return_mean']:.2f} ± {report['agent_return_std']:.2f} |",
        f"| random policy return | {report['random_return_mean']:.2f} ± {report['random_return_std']:.2f} |",
    ]
    for part, metrics in report.get("perception", {}).items():
        for key, value in metrics.items():
            lines.append(f"| {part} {key} | {_fmt(value)} |")
    lines += ["", *verdicts(report)]
    if report.get("probe"):
        lines += ["", "## What the context knows (state probes, probe.md)", "", *probe_table(report["probe"])]
    elif report.get("probe_skipped"):
        lines += ["", "## What the context knows", "", f"Not probed: {report['probe_skipped']}."]
    return lines


def stage_times(report: dict[str, Any]) -> str:
    """``": collect 2 s, tokenizer 18 s, …"``: where the demo's time went (empty for a report without them)."""
    seconds = report.get("stage_seconds") or {}
    return (": " + ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items())) if seconds else ""


def probe_table(probe: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: one per probed representation, one column per variable, then the score."""
    names = [k for k in next(iter(probe.values())) if k != "score"]
    rows = [
        "| representation | " + " | ".join(names) + " | score |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for rep, scores in probe.items():
        rows.append(
            f"| {rep} | " + " | ".join(f"{scores[n]:.3f}" for n in names) + f" | {scores['score']:.3f} |"
        )
    return rows


def verdicts(report: dict[str, Any]) -> list[str]:
    """Sentences that say where the run stands against its baselines."""
    out = []
    agent, random_ = report["agent_return_mean"], report["random_return_mean"]
    out.append(
        f"- The agent {'beats' if agent > random_ else 'does not beat'} the random policy "
        f"({agent:.2f} vs {random_:.2f})."
    )
    tokenizer = report.get("perception", {}).get("tokenizer", {})
    if "usage" in tokenizer:
        codes = ", ".join(f"{u:.0%}" for u in tokenizer["usage"])
        out.append(f"- The tokenizer uses {codes} of the codes of each head on held-out frames.")
    context = report.get("perception", {}).get("context_model", {})
    if "next_frame_accuracy" in context and "copy_last_accuracy" in context:
        accuracy, copy_last = context["next_frame_accuracy"], context["copy_last_accuracy"]
        if accuracy > copy_last:
            out.append(
                f"- Next-frame token accuracy {accuracy:.3f} is above the copy-last baseline {copy_last:.3f}."
            )
        else:
            out.append(
                f"- The context model is not above its copy-last baseline: next-frame token accuracy {accuracy:.3f} vs "
                f"{copy_last:.3f} for copying the last frame's tokens (train it longer: --context-steps)."
            )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def probe_frames(run_dir: Path) -> int | None:
    """How many frames the run's ``probe.json`` was made from; None without a readable one."""
    try:
        return int(json.loads((run_dir / "probe.json").read_text())["num_frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: What the summary of ``demo --quick`` says first: its numbers come from a tiny model on a few hundred frames.
QUICK_NOTE = (
    "(--quick: the tiny preset on a few hundred frames, a smoke run that the pipeline works end to end; its numbers "
    "below measure nothing — `aime-rl demo` without --quick is the real demo)"
)


def print_summary(
    run_dir: Path,
    report: dict[str, Any],
    reused: bool = False,
    probe_command: str | None = None,
    quick: bool = False,
) -> None:
    """The demo's summary of ``report``; ``reused``: the report of an earlier demo (its time is that run's);
    ``probe_command``: the run's ``aime-rl probe`` command line, offered when its probe had few frames; ``quick``:
    a ``demo --quick`` run's (the summary says its numbers measure nothing)."""
    tok = report["perception"].get("tokenizer", {})
    ctx = report["perception"].get("context_model", {})
    print("\n== aime-rl demo summary ==")
    if quick:
        print(QUICK_NOTE)
    print(
        f"agent ({report['algo']}) return: {report['agent_return_mean']:.2f} ± {report['agent_return_std']:.2f}   "
        f"random policy: {report['random_return_mean']:.2f} ± {report['random_return_std']:.2f}"
    )
    if tok:
        foreground = tok.get("foreground_psnr")
        moving = f" (foreground, the pixels that move: {foreground:.2f} dB)" if foreground is not None else ""
        print(f"tokenizer reconstruction PSNR: {tok.get('psnr', float('nan')):.2f} dB{moving}")
    if ctx:
        print(
            f"next-frame token accuracy: {ctx.get('next_frame_accuracy', float('nan')):.3f} "
            f"(copy-last baseline {ctx.get('copy_last_accuracy', float('nan')):.3f}); "
            f"predicted-frame PSNR {ctx.get('predicted_frame_psnr', float('nan')):.2f} dB"
        )
    for sentence in verdicts(report):
        print(sentence)
    if report.get("probe"):
        print("what the context knows (R² per state variable; probe.md has the protocol):")
        for row in probe_table(report["probe"]):
            print(row)
        frames = probe_frames(run_dir)
        if probe_command and frames is not None and frames < SHARP_PROBE_FRAMES:
            print(
                f"({frames} probe frames: a variable read less sharply, such as a velocity, comes out a few "
                f"hundredths low; `{probe_command} --probe-steps {SHARP_PROBE_FRAMES}` probes AtariARI's frame count)"
            )
    elif report.get("probe_skipped"):
        print(f"what the context knows: not probed ({report['probe_skipped']})")
    took = (
        f"the demo that made it took {report.get('seconds', 0):.0f} s"
        if reused
        else f"{report.get('seconds', 0):.0f} s"
    )
    print(f"report: {run_dir / 'report.md'}   ({took}{stage_times(report)})")
    print(f"TensorBoard: tensorboard --logdir {run_dir}")
