"""Atari (ALE) envs with the usual conventions of the deep-RL literature, without OpenCV.

``ALE/<Game>-v5`` ids exist only once ale-py is imported and registered (``import ale_py;
gym.register_envs(ale_py)``): :func:`register_atari_envs` does it on demand and turns a missing ale-py into a
one-line ``ValueError`` naming the extra (``pip install "aime-rl[atari]"``).

The conventions (Mnih et al. 2015; Machado et al. 2018), each an :class:`AtariOptions` field that an env preset's
``[atari]`` table sets (``aime_rl/envs/presets/pong.toml``, ``breakout.toml``):

- ``frame_skip`` (4): the agent acts every 4th emulator frame, the action repeated in between, rewards summed
  (:class:`MaxAndSkipFrames`; ALE itself runs with ``frameskip=1``).
- ``max_pool`` (True): the observation is the elementwise max of the last two emulator frames (removes the
  flicker of sprites drawn every other frame).
- ``noop_max`` (30): every episode starts with a random number of NOOP frames, uniform in ``1 … noop_max``
  (:class:`NoopReset`; 0 turns it off).
- ``sticky_actions`` (True) with ``repeat_action_probability`` (0.25, the v5 default): on every emulator frame
  ALE repeats the previous action with this probability (Machado et al. 2018's protocol, done by ALE itself, so
  Gymnasium's ``StickyAction`` wrapper is not needed); ``sticky_actions=False`` sets it to 0.
- ``fire_on_reset`` (``"auto"``): press FIRE after every reset (:class:`FireOnReset`), for games that wait for it
  (Breakout; harmless in Pong); ``"auto"`` does it when the action set's second action is FIRE (SB3's rule).
- ``terminal_on_life_loss`` (False): while training, a lost life ends the episode (``terminated=True``) and the
  next ``reset()`` continues the same game (:class:`TerminalOnLifeLoss`); evaluation always plays whole games.

No frame is resized or grayscaled here (the context wrappers resize to the model's frame size), and nothing needs
OpenCV (Gymnasium's ``AtariPreprocessing`` and SB3's ``AtariWrapper`` do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

__all__ = [
    "ATARI_EXTRA_HINT",
    "AtariOptions",
    "FireOnReset",
    "MaxAndSkipFrames",
    "NoopReset",
    "TerminalOnLifeLoss",
    "atari_make_kwargs",
    "is_atari_id",
    "needs_fire",
    "register_atari_envs",
    "wrap_atari_episodes",
    "wrap_atari_frames",
]

ATARI_EXTRA_HINT = 'pip install "aime-rl[atari]"'
ALE_NAMESPACE_PREFIX = "ALE/"
# ALE's own make kwargs that the conventions set: a preset or caller must use the AtariOptions fields instead
ALE_CONVENTION_KWARGS = ("frameskip", "repeat_action_probability")


@dataclass(frozen=True)
class AtariOptions:
    """The Atari conventions :func:`aime_rl.envs.make_env` applies (see the module docstring).

    Args:
        frame_skip: emulator frames per agent step (the action repeats, rewards add up); 1 = every frame.
        max_pool: observe the elementwise max of the last two emulator frames instead of the last one.
        noop_max: each episode starts with ``randint(1, noop_max)`` NOOP frames; 0 turns this off.
        sticky_actions: let ALE repeat the previous action with ``repeat_action_probability`` on each frame.
        repeat_action_probability: the sticky-action probability, in ``[0, 1)`` (v5 default 0.25).
        fire_on_reset: press FIRE after each reset: True, False or ``"auto"`` (when the game has FIRE as its
            second action, SB3's rule).
        terminal_on_life_loss: when training, a lost life ends the episode and ``reset()`` continues the game.

    Raises:
        ValueError: a field of the wrong type or out of range.
    """

    frame_skip: int = 4
    max_pool: bool = True
    noop_max: int = 30
    sticky_actions: bool = True
    repeat_action_probability: float = 0.25
    fire_on_reset: bool | Literal["auto"] = "auto"
    terminal_on_life_loss: bool = False

    def __post_init__(self) -> None:
        def is_int(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if not is_int(self.frame_skip) or self.frame_skip < 1:
            raise ValueError(f"atari option frame_skip must be an int >= 1, got {self.frame_skip!r}")
        if not is_int(self.noop_max) or self.noop_max < 0:
            raise ValueError(f"atari option noop_max must be an int >= 0, got {self.noop_max!r}")
        for name in ("max_pool", "sticky_actions", "terminal_on_life_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"atari option {name} must be true or false, got {getattr(self, name)!r}")
        probability = self.repeat_action_probability
        if (
            isinstance(probability, bool)
            or not isinstance(probability, (int, float))
            or not 0 <= probability < 1
        ):
            raise ValueError(f"atari option repeat_action_probability must be in [0, 1), got {probability!r}")
        if self.fire_on_reset not in (True, False, "auto"):
            raise ValueError(
                f"atari option fire_on_reset must be true, false or 'auto', got {self.fire_on_reset!r}"
            )
        object.__setattr__(self, "frame_skip", int(self.frame_skip))
        object.__setattr__(self, "noop_max", int(self.noop_max))
        object.__setattr__(self, "repeat_action_probability", float(probability))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], what: str = "atari options") -> AtariOptions:
        """Options from a mapping (a preset's ``[atari]`` table); missing keys take their defaults.

        Raises:
            ValueError: an unknown key (named, with ``what``) or a bad value.
        """
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"{what}: unknown atari option(s) {unknown}; known: {', '.join(cls.field_names())}"
            )
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-serialisable dict (``from_mapping`` reads it back)."""
        return dataclasses.asdict(self)

    @property
    def effective_repeat_action_probability(self) -> float:
        """What ALE gets: ``repeat_action_probability`` with sticky actions on, 0 otherwise."""
        return self.repeat_action_probability if self.sticky_actions else 0.0


def register_atari_envs(what: str = "this Atari env") -> None:
    """Register ale-py's ids (``ALE/<Game>-v5`` and the v0/v4 ids) with Gymnasium; a no-op when done before.

    Args:
        what: what needs them, for the error message (e.g. ``"env 'ALE/Pong-v5'"``).

    Raises:
        ValueError: ale-py is not installed (one line naming the ``atari`` extra).
    """
    try:
        import ale_py
    except ImportError:
        raise ValueError(f"{what} needs ale-py, which is not installed: {ATARI_EXTRA_HINT}") from None
    gym.register_envs(ale_py)


def is_atari_id(env_id: str) -> bool:
    """True for an ``ALE/...`` id or a registered id whose entry point is ale-py's ``AtariEnv``."""
    if env_id.startswith(ALE_NAMESPACE_PREFIX):
        return True
    spec = gym.envs.registry.get(env_id)
    return spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py")


def atari_make_kwargs(
    options: AtariOptions, make_kwargs: Mapping[str, Any], what: str = "env"
) -> dict[str, Any]:
    """``gym.make`` kwargs of the base ALE env: ``make_kwargs`` plus ``frameskip=1`` and the sticky-action rate.

    Raises:
        ValueError: ``make_kwargs`` sets ``frameskip`` or ``repeat_action_probability`` itself (they belong to the
            options: ``frame_skip``, ``repeat_action_probability``).
    """
    clashes = [key for key in ALE_CONVENTION_KWARGS if key in make_kwargs]
    if clashes:
        raise ValueError(
            f"{what}: make_kwargs {clashes} clash with the Atari conventions; set the atari options frame_skip / "
            "repeat_action_probability instead (ALE runs with frameskip=1 under aime-rl's max-pool wrapper), or "
            "turn the conventions off (atari = false) for the raw ALE env"
        )
    return {
        **make_kwargs,
        "frameskip": 1,
        "repeat_action_probability": options.effective_repeat_action_probability,
    }


def _action_meanings(env: gym.Env) -> list[str] | None:
    meanings = getattr(env.unwrapped, "get_action_meanings", None)
    return list(meanings()) if callable(meanings) else None


def needs_fire(env: gym.Env) -> bool:
    """SB3's rule: the game's second action is FIRE and it has at least three actions (Pong, Breakout, ...)."""
    meanings = _action_meanings(env)
    return meanings is not None and len(meanings) >= 3 and meanings[1] == "FIRE"


def _ale_lives(env: gym.Env) -> int:
    return int(env.unwrapped.ale.lives())


class NoopReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Start every episode with a random number of NOOP steps, uniform in ``1 … noop_max`` (Mnih et al. 2015).

    The count comes from the env's ``np_random`` (seeded by ``reset(seed=...)``) and is reported as
    ``info["noops"]``; rewards of the NOOP steps are dropped. Applied to the frame-level env (below frame skipping),
    the NOOPs are emulator frames.

    Args:
        env: an env whose action ``noop_action`` means NOOP (ALE: action 0).
        noop_max: the largest number of NOOPs, >= 1.
        noop_action: the NOOP action.

    Raises:
        ValueError: ``noop_max < 1``, or the env's action meanings say action ``noop_action`` is not NOOP.
    """

    def __init__(self, env: gym.Env, noop_max: int = 30, noop_action: int = 0):
        gym.utils.RecordConstructorArgs.__init__(self, noop_max=noop_max, noop_action=noop_action)
        gym.Wrapper.__init__(self, env)
        if noop_max < 1:
            raise ValueError(f"noop_max must be >= 1, got {noop_max}")
        meanings = _action_meanings(env)
        if meanings is not None and meanings[noop_action] != "NOOP":
            raise ValueError(
                f"action {noop_action} of {env.spec.id if env.spec else env} is {meanings[noop_action]}"
            )
        self.noop_max = int(noop_max)
        self.noop_action = noop_action

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the env, then take ``randint(1, noop_max)`` NOOP steps (resetting again if the episode ends)."""
        observation, info = self.env.reset(seed=seed, options=options)
        noops = int(self.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            observation, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                observation, info = self.env.reset()
        return observation, {**info, "noops": noops}


class MaxAndSkipFrames(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action for ``skip`` frames, sum the rewards, observe the max of the last two frames.

    Unlike Gymnasium's ``MaxAndSkipObservation`` (and SB3's ``MaxAndSkipEnv``), an episode that ends in the middle
    of a skip is observed right: the max is over the last two frames the env produced (the previous one may come
    from the previous step or from ``reset``), never over stale frames of an earlier step. With
    ``max_pool=False`` the observation is the last frame.

    Args:
        env: an env with ``Box`` observations (ALE with ``frameskip=1``).
        skip: frames per step, >= 1.
        max_pool: max over the last two frames (True) or the last frame only.

    Raises:
        ValueError: ``skip < 1`` or a non-``Box`` observation space.
    """

    def __init__(self, env: gym.Env, skip: int = 4, max_pool: bool = True):
        gym.utils.RecordConstructorArgs.__init__(self, skip=skip, max_pool=max_pool)
        gym.Wrapper.__init__(self, env)
        if skip < 1:
            raise ValueError(f"skip must be >= 1, got {skip}")
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise ValueError(f"MaxAndSkipFrames needs Box observations, got {env.observation_space}")
        self.skip = int(skip)
        self.max_pool = bool(max_pool)
        self._last_frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the env; its first frame is the previous frame of the first step's max."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._last_frame = observation
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Take ``action`` for ``skip`` frames (fewer if the episode ends); rewards summed, frames max-pooled."""
        total_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        previous = observation = self._last_frame
        for _ in range(self.skip):
            previous = observation
            observation, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        self._last_frame = observation
        if self.max_pool and previous is not None:
            return np.maximum(previous, observation), total_reward, terminated, truncated, info
        return np.array(observation, copy=True), total_reward, terminated, truncated, info


class FireOnReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE once after every reset, for games that wait for it (Breakout launches the ball with FIRE).

    The FIRE step's reward is dropped; if it ends the episode the env is reset again (without FIRE).

    Args:
        env: an env with action meanings (ALE) that include FIRE.

    Raises:
        ValueError: the env has no FIRE action.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        meanings = _action_meanings(env)
        if meanings is None or "FIRE" not in meanings:
            raise ValueError(f"FireOnReset needs an env with a FIRE action, got actions {meanings}")
        self.fire_action = meanings.index("FIRE")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the env and take one FIRE step; the info is the reset's, updated by the step's."""
        _, reset_info = self.env.reset(seed=seed, options=options)
        observation, _, terminated, truncated, info = self.env.step(self.fire_action)
        if terminated or truncated:
            return self.env.reset()
        return observation, {**reset_info, **info}


class TerminalOnLifeLoss(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A lost life ends the episode (``terminated=True``, ``info["life_lost"] = True``); ``reset()`` then continues
    the same game with one NOOP step instead of restarting it (DQN's episodic-life convention).

    The game restarts for real after a game over or a truncation, and whenever ``reset`` gets a ``seed`` or
    ``options``. For training only: returns of these "episodes" are per life.

    Args:
        env: an ALE env (``env.unwrapped.ale.lives()``).
        noop_action: the action of the continuing step.
    """

    def __init__(self, env: gym.Env, noop_action: int = 0):
        gym.utils.RecordConstructorArgs.__init__(self, noop_action=noop_action)
        gym.Wrapper.__init__(self, env)
        if not hasattr(env.unwrapped, "ale"):
            raise ValueError(f"TerminalOnLifeLoss needs an ALE env, got {env.unwrapped}")
        self.noop_action = noop_action
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; a life lost (but not the last) sets ``terminated`` and ``info["life_lost"]``."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = bool(terminated or truncated)
        lives = _ale_lives(self.env)
        if 0 < lives < self._lives:
            terminated = True
            info = {**info, "life_lost": True}
        self._lives = lives
        return observation, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """After a game over (or with a seed/options) reset the game; after a lost life, continue it."""
        if self._game_over or seed is not None or options is not None:
            observation, info = self.env.reset(seed=seed, options=options)
        else:
            observation, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                observation, info = self.env.reset()
        self._game_over = False
        self._lives = _ale_lives(self.env)
        return observation, info


def wrap_atari_frames(env: gym.Env, options: AtariOptions) -> gym.Env:
    """The frame-level conventions on a ``frameskip=1`` ALE env: NOOP starts, then frame skip with max-pooling."""
    if options.noop_max > 0:
        env = NoopReset(env, options.noop_max)
    if options.frame_skip > 1 or options.max_pool:
        env = MaxAndSkipFrames(env, options.frame_skip, options.max_pool)
    return env


def wrap_atari_episodes(env: gym.Env, options: AtariOptions, training: bool = True) -> gym.Env:
    """The episode-level conventions: life loss as episode end (training only), then FIRE on reset."""
    if training and options.terminal_on_life_loss:
        env = TerminalOnLifeLoss(env)
    fire = needs_fire(env) if options.fire_on_reset == "auto" else options.fire_on_reset
    if fire:
        env = FireOnReset(env)
    return env
