"""The README and the docs stay true: every ```python block runs, and the README keeps its shape.

Each ```python block of ``README.md`` and ``docs/*.md`` is run on its own (a fresh namespace, a temporary working
directory, one torch thread), one test per block, named ``file:line``. Shell blocks are not run. The README must
start with the two commands a newcomer copies — run the demo, run the tests — and the test command must be the one
``.ci/run`` runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 120
#: Optional dependencies a document's blocks need (skipped without them; the ``dev`` extra installs them).
REQUIRES = {"docs/atari.md": ["ale_py"]}

FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def fenced_blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, line of the opening fence, code)`` of every fenced block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text)]


def python_blocks() -> list:
    params = []
    for path in DOCUMENTS:
        name = path.relative_to(ROOT).as_posix()
        for language, line, code in fenced_blocks(path):
            if language == "python":
                params.append(pytest.param(name, line, code, id=f"{name}:{line}"))
    return params


def commands(code: str) -> list[str]:
    """The non-empty lines of a shell block that are not comments."""
    return [line.strip() for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "line", "code"), python_blocks())
def test_python_block_runs(name, line, code, tmp_path, monkeypatch, one_thread):
    for module in REQUIRES.get(name, []):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    # Line numbers in a traceback point into the document: the code starts on the line after the fence.
    compiled = compile("\n" * line + code, f"{name}:{line}", "exec")
    exec(compiled, {"__name__": "__readme_block__"})


def test_docs_have_python_blocks():
    names = {param.values[0] for param in python_blocks()}
    assert "README.md" in names
    assert {"docs/perception.md", "docs/wrappers.md", "docs/world_model.md"} <= names


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it ≤ {MAX_README_LINES}"


def test_readme_starts_with_the_demo_and_test_commands():
    text = README.read_text(encoding="utf-8")
    title = text.partition("\n")[0]
    assert title.startswith("# "), "README.md must start with its title"
    blocks = fenced_blocks(README)
    assert len(blocks) >= 2
    (demo_language, demo_line, demo), (test_language, test_line, tests) = blocks[:2]
    lines = text.splitlines()
    # lines are 0-based here: the demo block's closing fence is at demo_line + (its code lines)
    between = lines[1 : demo_line - 1] + lines[demo_line + demo.count("\n") + 1 : test_line - 1]
    assert all(not line.strip() for line in between), (
        "nothing may come between the title and the two commands"
    )
    assert demo_language == test_language == "bash"
    assert "run the demo" in demo and "run the tests" in tests  # the labels
    assert len(commands(demo)) == 1 and commands(demo)[0].endswith("aime-rl demo")
    ci_commands = [c for c in commands((ROOT / ".ci" / "run").read_text(encoding="utf-8")) if "pytest" in c]
    assert len(ci_commands) == 1, ".ci/run must run exactly one pytest command"
    assert commands(tests) == ci_commands, ".ci/run must run the README's test command exactly"
