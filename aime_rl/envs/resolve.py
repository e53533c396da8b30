"""One entry point from a name to an env: :func:`resolve_env`, :func:`check_env_spec`, :func:`make_env`.

Example::

    spec = resolve_env("pong")                # a preset name, a .toml path or any Gymnasium id ("ALE/Breakout-v5")
    frame_shape = check_env_spec(spec)        # makes one env: are there uint8 image frames? -> (210, 160, 3)
    env = make_env(spec, seed=0)              # Atari conventions applied (frame skip + max-pool, NOOP starts, ...)
    venv = DummyVecEnv([make_env_fn(spec, rank, seed=0) for rank in range(8)])   # picklable factories

``ALE/...`` ids are registered on demand (ale-py imported); every failure is a ``ValueError`` with a one-line
message (an unknown name gets close matches; a missing ale-py names the ``atari`` extra; an env without image
frames points to a preset that renders them).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from .atari import (
    ATARI_EXTRA_HINT,
    AtariOptions,
    atari_make_kwargs,
    is_atari_id,
    register_atari_envs,
    wrap_atari_episodes,
    wrap_atari_frames,
)
from .preset import FRAME_SOURCES, available_env_presets, load_env_preset

__all__ = ["EnvSpec", "check_env_spec", "make_env", "make_env_fn", "registered_env_id", "resolve_env"]

FrameSource = Literal["observation", "render"]
FRAME_SHAPES = "uint8 [H, W, 3], [H, W] or [H, W, 1]"


@dataclass(frozen=True)
class EnvSpec:
    """What :func:`make_env` makes: a Gymnasium id, its ``gym.make`` kwargs, where its frames are, Atari options.

    Not Gymnasium's ``EnvSpec`` (the registry entry); this one is aime-rl's recipe, cheap to build, picklable and
    JSON-able (:meth:`to_dict` / :meth:`from_dict`).

    Args:
        env_id: a registered Gymnasium id (canonical spelling).
        make_kwargs: keyword arguments of ``gym.make`` (for Atari envs: besides ``frameskip`` and
            ``repeat_action_probability``, which the ``atari`` options set).
        frame_source: ``"observation"`` (uint8 image observations) or ``"render"`` (frames from ``env.render()``).
        description: one line for logs and help texts.
        preset: the preset name or ``.toml`` path it came from, None for a plain id.
        atari: the Atari conventions :func:`make_env` applies, None for a non-Atari env (or raw ALE).

    Raises:
        ValueError: a bad ``frame_source``, ``make_kwargs`` that are not a dict, or ``atari`` of the wrong type.
    """

    env_id: str
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    frame_source: FrameSource = "observation"
    description: str = ""
    preset: str | None = None
    atari: AtariOptions | None = None

    def __post_init__(self) -> None:
        if self.frame_source not in FRAME_SOURCES:
            raise ValueError(f"frame_source must be one of {FRAME_SOURCES}, got {self.frame_source!r}")
        if not isinstance(self.make_kwargs, Mapping):
            raise ValueError(f"make_kwargs must be a dict, got {type(self.make_kwargs).__name__}")
        if self.atari is not None and not isinstance(self.atari, AtariOptions):
            raise ValueError(f"atari must be AtariOptions or None, got {type(self.atari).__name__}")
        object.__setattr__(self, "make_kwargs", dict(self.make_kwargs))

    @property
    def name(self) -> str:
        """The preset it came from, else the env id (for messages)."""
        return self.preset or self.env_id

    def with_overrides(self, **overrides: Any) -> EnvSpec:
        """A copy with ``overrides`` applied: Atari option names (``frame_skip``, ``noop_max``, ...) change the
        Atari options, ``atari=False``/``None`` drops them (raw env), ``atari=True``/a dict/``AtariOptions`` sets
        them, anything else is a ``gym.make`` kwarg (e.g. ``render_mode="rgb_array"``).

        Raises:
            ValueError: an Atari option for an env without Atari options, a bad option value, or ``frameskip`` /
                ``repeat_action_probability`` as make kwargs of an env with Atari options.
        """
        atari_names = AtariOptions.field_names()
        atari_overrides = {key: value for key, value in overrides.items() if key in atari_names}
        make_overrides = {
            key: value for key, value in overrides.items() if key not in atari_names and key != "atari"
        }
        atari = self.atari
        if "atari" in overrides:
            atari = _atari_options_from(overrides["atari"], self.env_id, atari)
        if atari_overrides:
            if atari is None:
                raise ValueError(
                    f"{sorted(atari_overrides)} are Atari options, but env {self.name!r} is not made with the "
                    "Atari conventions"
                )
            atari = AtariOptions.from_mapping({**atari.to_dict(), **atari_overrides})
        make_kwargs = {**self.make_kwargs, **make_overrides}
        if atari is not None:
            atari_make_kwargs(atari, make_kwargs, f"env {self.name!r}")  # the clash check
        return dataclasses.replace(self, make_kwargs=make_kwargs, atari=atari)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict (if its ``make_kwargs`` are); :meth:`from_dict` reads it back."""
        data = dataclasses.asdict(self)
        data["atari"] = None if self.atari is None else self.atari.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        """The spec :meth:`to_dict` wrote.

        Raises:
            ValueError: unknown keys or bad values.
        """
        names = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"env spec: unknown key(s) {unknown}; known: {', '.join(sorted(names))}")
        data = dict(data)
        if data.get("atari") is not None:
            data["atari"] = AtariOptions.from_mapping(data["atari"], "env spec")
        return cls(**data)


def _default_atari_options(env_id: str) -> AtariOptions:
    """Default conventions; the sticky-action rate is the registered one (v5: 0.25; v4 ids: 0, i.e. off)."""
    registered = gym.envs.registry.get(env_id)
    probability = 0.25 if registered is None else registered.kwargs.get("repeat_action_probability", 0.25)
    return AtariOptions(repeat_action_probability=float(probability), sticky_actions=probability > 0)


def _atari_options_from(value: Any, env_id: str, current: AtariOptions | None) -> AtariOptions | None:
    if value is None or value is False:
        return None
    if not is_atari_id(env_id):
        raise ValueError(f"atari options need an Atari env (ALE/<Game>-v5), got {env_id!r}")
    if value is True:
        return current or _default_atari_options(env_id)
    if isinstance(value, AtariOptions):
        return value
    if isinstance(value, Mapping):
        base = current or _default_atari_options(env_id)
        return AtariOptions.from_mapping({**base.to_dict(), **value})
    raise ValueError(f"atari must be True, False, None, a dict or AtariOptions, got {value!r}")


def _unknown_env_message(name: str, ale_missing: bool) -> str:
    presets = available_env_presets()
    candidates = {env_id.lower(): env_id for env_id in gym.envs.registry}
    candidates.update({preset.lower(): preset for preset in presets})
    matches = difflib.get_close_matches(name.lower(), list(candidates), n=3, cutoff=0.6)
    message = (
        f"unknown env {name!r}: neither an env preset ({', '.join(presets)}) nor a registered Gymnasium id"
    )
    if matches:
        message += f"; did you mean {' or '.join(repr(candidates[match]) for match in matches)}?"
    if ale_missing:
        message += f" (Atari ids need ale-py: {ATARI_EXTRA_HINT})"
    return message


def registered_env_id(env_id: str, what: str | None = None) -> str:
    """The canonical registered id of ``env_id``, registering ale-py's ids first when needed.

    ``ALE/...`` ids import ale-py and register its envs; any other id not found is tried once more after that
    (v0/v4 Atari ids such as ``PongNoFrameskip-v4``).

    Args:
        env_id: a Gymnasium id.
        what: what asks, as a prefix of the error message (e.g. ``"env preset 'pong'"``).

    Raises:
        ValueError: ale-py is missing for an ``ALE/`` id (naming the ``atari`` extra), or the id is unknown (with
            close matches among the registered ids and the preset names).
    """
    prefix = f"{what}: " if what else ""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{prefix}an env id must be a non-empty string, got {env_id!r}")
    if env_id.startswith("ALE/"):
        register_atari_envs(f"{prefix}env {env_id!r}")
    try:
        return gym.spec(env_id).id
    except (gym.error.Error, ImportError):
        pass
    try:
        register_atari_envs()
        ale_missing = False
    except ValueError:
        ale_missing = True
    if not ale_missing:
        try:
            return gym.spec(env_id).id
        except (gym.error.Error, ImportError):
            pass
    raise ValueError(prefix + _unknown_env_message(env_id, ale_missing))


def _spec_from_preset(source: str) -> EnvSpec:
    preset = load_env_preset(source)
    what = f"env preset {source!r}"
    env_id = registered_env_id(preset["env_id"], what)
    table = preset.get("atari")
    atari = None
    if is_atari_id(env_id):
        if table is not False:
            defaults = _default_atari_options(env_id).to_dict()
            atari = AtariOptions.from_mapping({**defaults, **(table or {})}, what)
            atari_make_kwargs(atari, preset["make_kwargs"], what)  # the clash check
    elif table:
        raise ValueError(f"{what}: an [atari] table needs an Atari env id (ALE/<Game>-v5), got {env_id!r}")
    return EnvSpec(
        env_id=env_id,
        make_kwargs=preset["make_kwargs"],
        frame_source=preset["frame_source"],
        description=preset["description"],
        preset=source,
        atari=atari,
    )


def resolve_env(name_or_id: str | os.PathLike | EnvSpec) -> EnvSpec:
    """The :class:`EnvSpec` of a preset name, a preset ``.toml`` path or a Gymnasium id (cheap: makes no env).

    A preset name (``"catch"``, ``"pong"``, ``"breakout"``, ``"cartpole_pixels"``) or path is read with
    :func:`aime_rl.envs.load_env_preset`; any other string is a Gymnasium id, with ``frame_source="observation"``
    and, for Atari ids, the default :class:`~aime_rl.envs.atari.AtariOptions`. ``ALE/...`` ids are registered on
    demand. An :class:`EnvSpec` is returned as is.

    Raises:
        ValueError: an unknown name or id (with close matches among registered ids and preset names), ale-py
            missing for an Atari id (one line naming ``pip install "aime-rl[atari]"``), or a malformed preset.
    """
    if isinstance(name_or_id, EnvSpec):
        return name_or_id
    if isinstance(name_or_id, os.PathLike):
        return _spec_from_preset(os.fspath(name_or_id))
    if not isinstance(name_or_id, str):
        raise ValueError(f"env must be a preset name, a .toml path or a Gymnasium id, got {name_or_id!r}")
    if name_or_id.endswith(".toml") or name_or_id in available_env_presets():
        return _spec_from_preset(name_or_id)
    env_id = registered_env_id(name_or_id)
    atari = _default_atari_options(env_id) if is_atari_id(env_id) else None
    return EnvSpec(env_id=env_id, description=f"Gymnasium env {env_id}", atari=atari)


def _monitor(env: gym.Env) -> gym.Env:
    from stable_baselines3.common.monitor import Monitor  # SB3 stays out of `import aime_rl`

    return Monitor(env)


def _gym_make(spec: EnvSpec, make_kwargs: dict[str, Any]) -> gym.Env:
    try:
        return gym.make(spec.env_id, **make_kwargs)
    except (gym.error.Error, ImportError, TypeError) as error:
        raise ValueError(f"env {spec.name!r} ({spec.env_id}) cannot be made: {error}") from error


def make_env(
    spec_or_name: str | os.PathLike | EnvSpec,
    seed: int | None = None,
    training: bool = True,
    *,
    monitor: bool = False,
    **overrides: Any,
) -> gym.Env:
    """Make the env of a spec, preset or id, with its Atari conventions applied (no frame resizing).

    Wrapping order for Atari envs (inside out): ``gym.make(id, frameskip=1, repeat_action_probability=p)`` →
    :class:`~aime_rl.envs.atari.NoopReset` → :class:`~aime_rl.envs.atari.MaxAndSkipFrames` → (SB3 ``Monitor``) →
    :class:`~aime_rl.envs.atari.TerminalOnLifeLoss` (training only) → :class:`~aime_rl.envs.atari.FireOnReset`.
    Other envs: ``gym.make(id, **make_kwargs)`` (→ ``Monitor``).

    Args:
        spec_or_name: anything :func:`resolve_env` takes.
        seed: seeds the env (one ``reset(seed=seed)`` here, so later ``reset()`` calls continue deterministically)
            and its action space; None leaves both unseeded.
        training: False turns ``terminal_on_life_loss`` off (evaluation plays whole games).
        monitor: wrap in SB3's ``Monitor`` for episode statistics, below the life-loss wrapper (whole games).
        **overrides: see :meth:`EnvSpec.with_overrides`: Atari options (``frame_skip=1``, ``noop_max=0``,
            ``sticky_actions=False``, ``fire_on_reset=False``, ``terminal_on_life_loss=True``, ``atari=False``) or
            ``gym.make`` kwargs (``render_mode="rgb_array"``).

    Returns:
        The env (observations as the env makes them, e.g. ALE RGB ``[210, 160, 3]`` uint8).

    Raises:
        ValueError: anything :func:`resolve_env` or :meth:`EnvSpec.with_overrides` raises, or ``gym.make``
            failing (a missing dependency, a bad kwarg).
    """
    spec = resolve_env(spec_or_name)
    if overrides:
        spec = spec.with_overrides(**overrides)
    if spec.atari is None:
        env = _gym_make(spec, spec.make_kwargs)
        if monitor:
            env = _monitor(env)
    else:
        register_atari_envs(f"env {spec.name!r}")  # a fresh worker process may not have the ids yet
        env = _gym_make(spec, atari_make_kwargs(spec.atari, spec.make_kwargs, f"env {spec.name!r}"))
        env = wrap_atari_frames(env, spec.atari)
        if monitor:
            env = _monitor(env)
        env = wrap_atari_episodes(env, spec.atari, training)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_env_fn(
    spec: str | os.PathLike | EnvSpec,
    rank: int = 0,
    seed: int | None = None,
    *,
    training: bool = True,
    monitor: bool = False,
    **overrides: Any,
) -> Callable[[], gym.Env]:
    """A picklable ``() -> gym.Env`` for SB3's ``DummyVecEnv`` / ``SubprocVecEnv``: ``make_env`` of sub-env ``rank``.

    The spec is resolved (and ``overrides`` applied) here, so errors come from the calling process; the worker only
    makes the env (registering ALE ids itself).

    Args:
        spec: anything :func:`resolve_env` takes.
        rank: the sub-env's index; it is seeded with ``seed + rank``.
        seed: the base seed, None for unseeded envs.
        training: as in :func:`make_env`.
        monitor: as in :func:`make_env`.
        **overrides: as in :func:`make_env`.

    Raises:
        ValueError: a negative ``rank`` or anything :func:`resolve_env` / :meth:`EnvSpec.with_overrides` raises.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise ValueError(f"rank must be an int >= 0, got {rank!r}")
    resolved = resolve_env(spec)
    if overrides:
        resolved = resolved.with_overrides(**overrides)
    env_seed = None if seed is None else int(seed) + int(rank)
    return functools.partial(make_env, resolved, env_seed, training, monitor=monitor)


def _is_image_frame_space(space: gym.Space) -> bool:
    if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8:
        return False
    return len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3))


def _check_frame(frame: Any, spec: EnvSpec, where: str) -> tuple[int, ...]:
    ok = isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    ok = ok and (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[-1] in (1, 3)))
    if not ok:
        got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"env {spec.name!r}: {where} gives {got}, not a frame ({FRAME_SHAPES})")
    return tuple(frame.shape)


def _render_presets_of(spec: EnvSpec) -> list[str]:
    """Shipped presets that take the frames of ``spec.env_id`` from ``render()``."""
    names = []
    for name in available_env_presets():
        try:
            preset = load_env_preset(name)
        except ValueError:
            continue
        if name != spec.preset and preset["env_id"] == spec.env_id and preset["frame_source"] == "render":
            names.append(name)
    return names


def _describe_space(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"Box({space.dtype}, {list(space.shape)})"
    return str(space)


def _no_frames_message(spec: EnvSpec, space: gym.Space) -> str:
    message = f"env {spec.name!r} has no image frames: its observations are {_describe_space(space)}, not {FRAME_SHAPES}"
    presets = _render_presets_of(spec)
    if presets:
        return f"{message}; use the preset {presets[0]!r} (--env {presets[0]}), which takes its frames from render()"
    return (
        f'{message}; use a preset with frame_source = "render" and make_kwargs.render_mode = "rgb_array" '
        "(like aime_rl/envs/presets/cartpole_pixels.toml)"
    )


def check_env_spec(spec: str | os.PathLike | EnvSpec) -> tuple[int, ...]:
    """Make one env, check it yields uint8 image frames on reset and on one step, close it.

    Frames are the observations (``frame_source="observation"``: ``uint8 [H, W, 3]``, ``[H, W]`` or
    ``[H, W, 1]``) or ``env.render()`` (``frame_source="render"``, which needs ``render_mode="rgb_array"``).

    Args:
        spec: anything :func:`resolve_env` takes.

    Returns:
        The shape of the env's frames, e.g. ``(210, 160, 3)`` for Atari.

    Raises:
        ValueError: anything :func:`resolve_env` raises, the env cannot be made or stepped (e.g. a missing
            dependency), or it has no image frames (for a state-based env such as ``CartPole-v1`` the message
            points to the preset that renders it, ``--env cartpole_pixels``).
    """
    spec = resolve_env(spec)
    env = make_env(spec, training=False)
    try:
        if spec.frame_source == "observation" and not _is_image_frame_space(env.observation_space):
            raise ValueError(_no_frames_message(spec, env.observation_space))
        if spec.frame_source == "render" and env.render_mode != "rgb_array":
            raise ValueError(
                f"env {spec.name!r} takes its frames from render() but its render_mode is {env.render_mode!r}: "
                'set make_kwargs.render_mode = "rgb_array"'
            )
        try:
            observation, _ = env.reset(seed=0)
            shape = _frame_shape(env, observation, spec)
            env.action_space.seed(0)
            observation, *_ = env.step(env.action_space.sample())
            _frame_shape(env, observation, spec)
        except (gym.error.Error, ImportError) as error:
            raise ValueError(f"env {spec.name!r} ({spec.env_id}) fails: {error}") from error
    finally:
        env.close()
    return shape


def _frame_shape(env: gym.Env, observation: Any, spec: EnvSpec) -> tuple[int, ...]:
    if spec.frame_source == "render":
        return _check_frame(env.render(), spec, "render()")
    return _check_frame(observation, spec, "its observation")
