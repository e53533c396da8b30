"""Experiment files (TOML) the ``aime-rl`` command runs, shipped as package data.

``demo.toml`` is the built-in default (``aime-rl demo`` and every stage without ``--config``); ``quick.toml`` is
``aime-rl demo --quick``; ``atari.toml`` is the Atari recipe of ``docs/atari.md``, laid over ``demo.toml`` for every
new run of an Atari game (``--config atari`` names it). A user's ``--config FILE`` is layered on top of the default
of the run's kind of env, then flags on top of that; the name of a shipped experiment is a run's whole base.
"""

from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).resolve().parent


def experiment_path(name: str) -> Path:
    """``<package>/experiments/<name>.toml``."""
    return EXPERIMENTS_DIR / f"{name}.toml"


def is_shipped(path: Path) -> bool:
    """Whether ``path`` (a :func:`resolve_config` answer) is one of the shipped experiment files."""
    return path.resolve().parent == EXPERIMENTS_DIR and path.suffix == ".toml"


def shipped_experiments() -> list[str]:
    """Names of the shipped experiment files: ``["atari", "demo", "quick"]``."""
    return sorted(path.stem for path in EXPERIMENTS_DIR.glob("*.toml"))


def resolve_config(value: str) -> Path:
    """The TOML file ``--config value`` means: an existing file, else a shipped experiment of that name.

    ``ValueError`` names the value and the shipped experiments when it is neither.
    """
    path = Path(value)
    if path.is_file():
        return path
    if path.name == value and value in shipped_experiments():
        return experiment_path(value)
    names = ", ".join(shipped_experiments())
    raise ValueError(f"config file not found: {value} (nor a shipped experiment: {names})")
