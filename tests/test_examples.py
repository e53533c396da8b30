"""The examples stay runnable (short runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("tokenizer_demo.py", ["--steps", "2", "--size", "32"], "streaming == offline tokens: True"),
        ("predictor_demo.py", ["--steps", "2"], "generate('autoregressive')"),
        ("perceiver_flow_demo.py", [], "stream == offline"),
    ],
)
def test_example_runs(script, args, expected):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout


def test_a_frame_size_the_tokenizer_cannot_take_is_a_usage_error_not_a_traceback():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tokenizer_demo.py"), "--size", "30"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "--size 30: frame_size 30x30 must be divisible by downsample=8" in result.stderr
    assert "Traceback" not in result.stderr
