"""The ``>>>`` examples in the docstrings of the public classes run and show what they print."""

from __future__ import annotations

import doctest
import importlib

import pytest

#: Modules whose docstrings hold runnable examples (each is small: tiny preset, tiny sizes, < 2 s).
MODULES = [
    "aime_rl.wrappers.context",
    "aime_rl.perception.causal_perceiver",
    "aime_rl.replay.store",
    "aime_rl.world_model.vrnn",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False, report=False
    )
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
