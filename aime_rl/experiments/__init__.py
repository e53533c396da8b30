"""Experiment files (TOML) the ``aime-rl`` command runs, shipped as package data.

``demo.toml`` is the built-in default (``aime-rl demo`` and every stage without ``--config``); ``quick.toml`` is
``aime-rl demo --quick``. A user's ``--config FILE`` is layered on top of the default, then flags on top of that.
"""

from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).resolve().parent


def experiment_path(name: str) -> Path:
    """``<package>/experiments/<name>.toml``."""
    return EXPERIMENTS_DIR / f"{name}.toml"
