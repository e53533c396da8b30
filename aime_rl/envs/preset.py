"""Environment presets: TOML files that say which env to make, how, and where its frames come from.

A preset (shipped in ``aime_rl/envs/presets/`` or any ``.toml`` file) has these keys:

- ``env_id`` (str, required): a Gymnasium id (``ALE/<Game>-v5`` ids are registered on demand).
- ``description`` (str): one line for ``--help`` texts and logs.
- ``frame_source``: ``"observation"`` (the observations are uint8 images) or ``"render"`` (frames come from
  ``env.render()``; set ``make_kwargs.render_mode = "rgb_array"``).
- ``[make_kwargs]``: keyword arguments of ``gym.make``.
- ``[atari]`` (Atari envs only): the conventions :func:`aime_rl.envs.make_env` applies, see
  :class:`aime_rl.envs.atari.AtariOptions` (``frame_skip``, ``max_pool``, ``noop_max``, ``sticky_actions``,
  ``repeat_action_probability``, ``fire_on_reset``, ``terminal_on_life_loss``); missing keys take their defaults,
  and an Atari preset without the table gets all defaults. ``atari = false`` makes the raw ALE env instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["FRAME_SOURCES", "PRESETS_DIR", "available_env_presets", "load_env_preset"]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
FRAME_SOURCES = ("observation", "render")
PRESET_KEYS = ("env_id", "description", "frame_source", "make_kwargs", "atari")


def available_env_presets() -> list[str]:
    """Names of the presets shipped with the package (``load_env_preset`` accepts each)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


def load_env_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Read an environment preset: a shipped name (``"catch"``) or a path to a ``.toml`` file.

    Args:
        name_or_path: a name from :func:`available_env_presets` or the path of a ``.toml`` file.

    Returns:
        A dict with ``env_id`` (str), ``make_kwargs`` (dict for ``gym.make``, empty if absent), ``frame_source``
        (``"observation"`` or ``"render"``), ``description`` (str) and ``atari`` (the ``[atari]`` table as a dict,
        ``False`` for ``atari = false``, ``None`` when absent), plus any other keys the file has.

    Raises:
        ValueError: an unknown name, a missing file or a malformed preset.
    """
    path = _preset_path(name_or_path)
    try:
        with path.open("rb") as file:
            preset = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"env preset {str(path)!r} is not valid TOML: {error}") from error
    return _validated_preset(preset, path)


def _preset_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ValueError(f"env preset file {str(candidate)!r} does not exist")
        return candidate
    path = PRESETS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(
            f"unknown env preset {str(name_or_path)!r}; available: {', '.join(available_env_presets())}"
        )
    return path


def _validated_preset(preset: dict[str, Any], path: Path) -> dict[str, Any]:
    where = f"env preset {str(path)!r}"
    if not isinstance(preset.get("env_id"), str):
        raise ValueError(f"{where} must set env_id to a string, got {preset.get('env_id')!r}")
    preset.setdefault("make_kwargs", {})
    preset.setdefault("frame_source", "observation")
    preset.setdefault("description", "")
    preset.setdefault("atari", None)
    if not isinstance(preset["make_kwargs"], dict):
        raise ValueError(f"{where}: make_kwargs must be a table, got {preset['make_kwargs']!r}")
    if preset["frame_source"] not in FRAME_SOURCES:
        raise ValueError(
            f"{where}: frame_source must be one of {FRAME_SOURCES}, got {preset['frame_source']!r}"
        )
    if not isinstance(preset["description"], str):
        raise ValueError(f"{where}: description must be a string, got {preset['description']!r}")
    if preset["atari"] is not None and preset["atari"] is not False and not isinstance(preset["atari"], dict):
        raise ValueError(f"{where}: atari must be a table or false, got {preset['atari']!r}")
    return preset
