"""Built-in pixel environments and environment presets.

``register_builtin_envs()`` (run on ``import aime_rl.envs``, hence on ``import aime_rl``) registers:

- ``aime_rl/Catch-v0``: :class:`CatchEnv` with pixel observations, uint8 ``[64, 64, 3]``.
- ``aime_rl/CatchState-v0``: the same game with its true state as observation, float32 ``[5]``; ``render()``
  still returns the uint8 ``[64, 64, 3]`` frame.

``load_env_preset(name_or_path)`` reads an environment preset (TOML) shipped in ``aime_rl/envs/presets/``: which
env id to make, with which ``gym.make`` kwargs, and where its frames come from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from aime_rl.envs.catch import CatchEnv

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

__all__ = ["CatchEnv", "BUILTIN_ENV_IDS", "register_builtin_envs", "load_env_preset", "available_env_presets"]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CATCH_MAX_EPISODE_STEPS = 500  # 10 balls take at most 10 * 16 = 160 steps with the defaults
BUILTIN_ENV_IDS = ("aime_rl/Catch-v0", "aime_rl/CatchState-v0")
FRAME_SOURCES = ("observation", "render")


def register_builtin_envs() -> None:
    """Register the built-in envs with Gymnasium; calling it again is a no-op."""
    catch_kwargs = {
        "aime_rl/Catch-v0": {"obs_type": "pixels"},
        "aime_rl/CatchState-v0": {"obs_type": "state"},
    }
    for env_id, kwargs in catch_kwargs.items():
        if env_id not in gym.envs.registry:
            gym.register(
                id=env_id,
                entry_point="aime_rl.envs.catch:CatchEnv",
                max_episode_steps=CATCH_MAX_EPISODE_STEPS,
                kwargs=kwargs,
            )


def available_env_presets() -> list[str]:
    """Names of the presets shipped with the package (``load_env_preset`` accepts each)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


def load_env_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Read an environment preset: a shipped name (``"catch"``) or a path to a ``.toml`` file.

    Returns a dict with ``env_id`` (str), ``make_kwargs`` (dict for ``gym.make``, empty if absent),
    ``frame_source`` (``"observation"``: frames are the observations; ``"render"``: frames come from
    ``env.render()``) and ``description`` (str), plus any other keys the file has. Raises ``ValueError`` for an
    unknown name, a missing file or a malformed preset.
    """
    path = _preset_path(name_or_path)
    if tomllib is None:
        raise ValueError(f"reading env preset {str(name_or_path)!r} needs Python >= 3.11 (tomllib)")
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
    if not isinstance(preset.get("env_id"), str):
        raise ValueError(
            f"env preset {str(path)!r} must set env_id to a string, got {preset.get('env_id')!r}"
        )
    preset.setdefault("make_kwargs", {})
    preset.setdefault("frame_source", "observation")
    preset.setdefault("description", "")
    if not isinstance(preset["make_kwargs"], dict):
        raise ValueError(
            f"env preset {str(path)!r}: make_kwargs must be a table, got {preset['make_kwargs']!r}"
        )
    if preset["frame_source"] not in FRAME_SOURCES:
        raise ValueError(
            f"env preset {str(path)!r}: frame_source must be one of {FRAME_SOURCES}, got {preset['frame_source']!r}"
        )
    return preset


register_builtin_envs()
