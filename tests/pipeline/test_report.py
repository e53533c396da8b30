"""The demo's printed summary: the probe table, and what to run when the probe had few frames."""

from __future__ import annotations

import json

import pytest

from aime_rl.pipeline.report import SHARP_PROBE_FRAMES, print_summary

REPORT = {
    "algo": "ppo",
    "agent_return_mean": 2.0,
    "agent_return_std": 1.0,
    "random_return_mean": -4.0,
    "random_return_std": 1.0,
    "perception": {},
    "probe": {"context": {"ball_x": 0.95, "ball_vx": 0.66, "score": 0.8}},
    "seconds": 100.0,
}
COMMAND = "aime-rl probe --name demo"


def summary(run_dir, capsys, frames: int | None) -> str:
    if frames is not None:
        (run_dir / "probe.json").write_text(json.dumps({"num_frames": frames}))
    print_summary(run_dir, REPORT, probe_command=COMMAND)
    return capsys.readouterr().out


def test_a_probe_of_few_frames_offers_the_command_of_a_larger_one(tmp_path, capsys):
    out = summary(tmp_path, capsys, 3000)
    assert "| context | 0.950 | 0.660 | 0.800 |" in out
    assert "(3000 probe frames: " in out and f"`{COMMAND} --probe-steps {SHARP_PROBE_FRAMES}`" in out


@pytest.mark.parametrize("frames", [SHARP_PROBE_FRAMES, None], ids=["atariari-size", "no-probe-json"])
def test_no_offer_for_a_probe_of_atariari_size_or_an_unreadable_one(tmp_path, capsys, frames):
    out = summary(tmp_path, capsys, frames)
    assert "| context |" in out and "--probe-steps" not in out


def test_the_summary_says_where_the_demos_time_went(tmp_path, capsys):
    report = {**REPORT, "stage_seconds": {"collect": 1.6, "tokenizer": 18.2, "context model": 48.0}}
    print_summary(tmp_path, report)
    assert "(100 s: collect 2 s, tokenizer 18 s, context model 48 s)" in capsys.readouterr().out
