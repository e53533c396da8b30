"""Labelled frames for state probes: raw env frames with the true state variables of every frame.

:func:`collect_labelled` runs a policy (uniformly random by default, the AtariARI protocol) in a Gymnasium env
and records, for every frame it sees (the reset frame and each step's frame, terminal frames included):

- the raw frame, uint8 ``[H, W, 3]`` (the image observation, or ``env.render()`` for state-based envs made with
  ``render_mode="rgb_array"``), and a 64-bit hash of its bytes (test frames seen in training are removed by hash);
- the labels: ``label_fn(env, obs, info) -> {name: value}`` called right after the reset/step that produced the
  frame, so label ``i`` describes frame ``i``;
- the episode id, the step within the episode, and the action taken at the frame (what the policy did next;
  the last frame of an episode, where no action was taken, holds 0).

Labelling functions: :func:`catch_labels` (Catch's true state: continuous, scored by R²; :func:`catch_landing_labels`
adds the column where the ball will land), :func:`cartpole_labels` (CartPole's four state variables, continuous) and
:func:`atari_ram_labels` (RAM bytes of an annotated ALE game, read with ``env.unwrapped.ale.getRAM()``: discrete,
256 classes, scored by weighted F1). Any callable ``label_fn(env, obs, info) -> dict`` works; it may carry a
``variables`` attribute (``{name: VariableInfo}``) saying what each label is, otherwise integer/bool labels are
discrete, float labels continuous, and categories follow the paper's naming rules.

The data they make, :class:`LabelledFrames` and :class:`VariableInfo`, live in :mod:`aime_rl.evaluation.labelled_frames`
and are importable from here as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from aime_rl.envs.catch import STATE_FIELDS, CatchEnv
from aime_rl.wrappers.preprocessing import frame_source_for, to_model_frames

from .atari_ram import (
    CATEGORY_OVERRIDES,
    RAM_ANNOTATIONS,
    expand_ram_variables,
    game_name,
    paper_categories,
)
from .labelled_frames import Kind, LabelledFrames, VariableInfo  # noqa: F401  (Kind: importable from here as before)

__all__ = [
    "LabelFn",
    "LabelledFrames",
    "RamLabels",
    "VariableInfo",
    "atari_ram_labels",
    "cartpole_labels",
    "catch_labels",
    "catch_landing_labels",
    "collect_labelled",
    "env_id_of",
    "frame_hashes",
    "open_env",
    "variables_of",
]

LabelFn = Callable[[gym.Env, Any, dict], Mapping[str, Any]]
EnvSource = Callable[[], gym.Env] | gym.Env | str


# ------------------------------------------------------------------------------------------- labelling functions


def catch_labels(env: gym.Env, obs: Any = None, info: dict | None = None) -> dict[str, float]:
    """Catch's true state (a ``label_fn``): ``ball_x, ball_y, ball_vx, ball_vy, paddle_x`` as floats.

    The values of ``CatchEnv.state_vector()``: positions in ``[0, 1]`` of the screen, ``ball_vx`` in ``[-1, 1]``
    of the top drift speed, ``ball_vy`` in ``(0, 1]`` of the top fall speed. Continuous: probed by ridge
    regression, scored by R². Raises ``ValueError`` when ``env`` is not (a wrapper of) :class:`CatchEnv`.
    """
    catch = env.unwrapped
    if not isinstance(catch, CatchEnv):
        raise ValueError(f"catch_labels needs a CatchEnv (aime_rl/Catch-v0), got {type(catch).__name__}")
    return {name: float(value) for name, value in zip(STATE_FIELDS, catch.state_vector(), strict=True)}


catch_labels.variables = {  # type: ignore[attr-defined]
    "ball_x": VariableInfo("continuous", ("small_object_localization",)),
    "ball_y": VariableInfo("continuous", ("small_object_localization",)),
    "ball_vx": VariableInfo("continuous", ("small_object_velocity",)),
    "ball_vy": VariableInfo("continuous", ("small_object_velocity",)),
    "paddle_x": VariableInfo("continuous", ("agent_localization",)),
}


def catch_landing_labels(env: gym.Env, obs: Any = None, info: dict | None = None) -> dict[str, float]:
    """:func:`catch_labels` plus ``landing_x``: the column (in ``[0, 1]`` of the screen) where the current ball
    will reach the paddle row, wall bounces included (``CatchEnv.predicted_landing_x``).

    It is the column a catching policy moves to (``CatchEnv.oracle_action``), a non-linear function of the ball's
    position and velocity: a probe of it says how much of what the agent acts on a representation carries, where
    the position probes can stand still while agents move (``benchmarks/README.md``, issue 13). Raises
    ``ValueError`` when ``env`` is not (a wrapper of) :class:`CatchEnv`.
    """
    labels = catch_labels(env, obs, info)
    catch = env.unwrapped
    return {**labels, "landing_x": float(catch.predicted_landing_x() / (catch.size - 1))}


catch_landing_labels.variables = {  # type: ignore[attr-defined]
    **catch_labels.variables,
    "landing_x": VariableInfo("continuous", ("small_object_localization",)),
}


#: CartPole's state variables, in the order of ``CartPoleEnv.state``.
CARTPOLE_FIELDS = ("cart_x", "cart_velocity", "pole_angle", "pole_angular_velocity")


def cartpole_labels(env: gym.Env, obs: Any = None, info: dict | None = None) -> dict[str, float]:
    """CartPole's true state (a ``label_fn``): ``cart_x`` (metres from the centre), ``cart_velocity`` (m/s),
    ``pole_angle`` (radians from upright), ``pole_angular_velocity`` (rad/s), the four floats of
    ``CartPoleEnv.state`` — what the ``cartpole_pixels`` preset's frames show.

    Continuous: probed by ridge regression, scored by R². The cart and its pole are the agent: positions are
    ``agent_localization``, velocities ``agent_velocity``. Raises ``ValueError`` when ``env`` is not (a wrapper of)
    Gymnasium's ``CartPoleEnv``.
    """
    cartpole = env.unwrapped
    if not isinstance(cartpole, CartPoleEnv):
        raise ValueError(f"cartpole_labels needs a CartPoleEnv (CartPole-v1), got {type(cartpole).__name__}")
    if cartpole.state is None:
        raise ValueError("cartpole_labels: the CartPoleEnv has no state yet (call reset first)")
    return {name: float(value) for name, value in zip(CARTPOLE_FIELDS, cartpole.state, strict=True)}


cartpole_labels.variables = {  # type: ignore[attr-defined]
    "cart_x": VariableInfo("continuous", ("agent_localization",)),
    "cart_velocity": VariableInfo("continuous", ("agent_velocity",)),
    "pole_angle": VariableInfo("continuous", ("agent_localization",)),
    "pole_angular_velocity": VariableInfo("continuous", ("agent_velocity",)),
}


class RamLabels:
    """A ``label_fn`` reading the annotated RAM bytes of an ALE game (``env.unwrapped.ale.getRAM()``).

    ``RamLabels("pong")(env, obs, info)`` → ``{"player_y": int, …}``; :attr:`variables` says every variable is
    discrete with 256 classes and gives its paper categories; :attr:`indices` maps names to RAM indices.
    """

    def __init__(self, game: str):
        self.game = game
        self.indices = expand_ram_variables(game)
        overrides = CATEGORY_OVERRIDES.get(game, {})
        self.variables = {
            name: VariableInfo("discrete", overrides.get(name, paper_categories(name)), 256)
            for name in self.indices
        }
        self._names = list(self.indices)
        self._index_array = np.array([self.indices[n] for n in self._names], dtype=np.int64)

    def __call__(self, env: gym.Env, obs: Any = None, info: dict | None = None) -> dict[str, int]:
        ale = getattr(env.unwrapped, "ale", None)
        if ale is None:
            raise ValueError(
                f"RAM labels need an ALE env (env.unwrapped.ale), got {type(env.unwrapped).__name__}"
            )
        ram = np.asarray(ale.getRAM(), dtype=np.int64)
        return dict(zip(self._names, ram[self._index_array].tolist(), strict=True))

    def __repr__(self) -> str:
        return f"RamLabels({self.game!r}, {len(self.indices)} variables)"


def atari_ram_labels(game: str) -> RamLabels:
    """The ``label_fn`` of an annotated ALE game (``"pong"``, ``"breakout"``, … or an env id like ``"ALE/Pong-v5"``).

    Raises ``ValueError`` for a game without RAM annotations.
    """
    key = game if game in RAM_ANNOTATIONS else game_name(game)
    if key is None:
        raise ValueError(
            f"no RAM annotations for game {game!r}; annotated games: {', '.join(sorted(RAM_ANNOTATIONS))}"
        )
    return RamLabels(key)


def variables_of(label_fn: LabelFn, labels: Mapping[str, np.ndarray]) -> dict[str, VariableInfo]:
    """What each collected label is: ``label_fn.variables`` where given, else inferred from the values.

    Integer and bool arrays are discrete (classes = the values seen), float arrays continuous; categories follow
    :func:`~aime_rl.evaluation.atari_ram.paper_categories`.
    """
    declared = dict(getattr(label_fn, "variables", None) or {})
    result = {}
    for name, values in labels.items():
        if name in declared:
            result[name] = declared[name]
        elif np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
            result[name] = VariableInfo("discrete", paper_categories(name))
        else:
            result[name] = VariableInfo("continuous", paper_categories(name))
    return result


# --------------------------------------------------------------------------------------------------- collection


def open_env(env: EnvSource) -> tuple[gym.Env, bool]:
    """``(env, owned)``: call a factory, ``gym.make`` an id (registering ALE ids on demand), or take an env.

    ``owned`` is True when this call created the env (the caller closes it).
    """
    if isinstance(env, gym.Env):
        return env, False
    if isinstance(env, str):
        if env.startswith("ALE/"):
            import ale_py

            gym.register_envs(ale_py)
        return gym.make(env), True
    if callable(env):
        made = env()
        if not isinstance(made, gym.Env):
            raise ValueError(f"env factory must return a gymnasium.Env, got {type(made).__name__}")
        return made, True
    raise ValueError(f"env must be a gymnasium.Env, an env factory or an env id, got {type(env).__name__}")


def env_id_of(env: gym.Env) -> str | None:
    """``env.spec.id`` (or the unwrapped env's), None when it has none."""
    for candidate in (env, env.unwrapped):
        spec = getattr(candidate, "spec", None)
        if spec is not None and getattr(spec, "id", None):
            return spec.id
    return None


def _as_rgb(frame: Any) -> np.ndarray:
    """uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` → a fresh uint8 ``[H, W, 3]``."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {frame.shape}")
    if frame.shape[-1] == 1:
        return np.repeat(frame, 3, axis=-1)
    return np.array(frame[..., :3])


def frame_hashes(frames: np.ndarray) -> np.ndarray:
    """int64 ``[N]``: a 64-bit BLAKE2b hash of each frame's bytes (equal frames, equal hashes)."""
    return np.array([_hash(frame) for frame in frames], dtype=np.int64)


def _hash(frame: np.ndarray) -> int:
    digest = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=8).digest()
    return int(np.frombuffer(digest, dtype=np.int64)[0])


def _policy_action(policy: Any, env: gym.Env, obs: Any, info: dict) -> Any:
    if policy is None:
        return env.action_space.sample()
    if hasattr(policy, "predict"):  # an SB3 agent (it sees the env's observations)
        action, _ = policy.predict(obs, deterministic=False)
        if isinstance(env.action_space, spaces.Discrete):
            return int(np.asarray(action).reshape(()))
        return np.asarray(action)
    return policy(obs)


def collect_labelled(
    env_fn: EnvSource,
    label_fn: LabelFn,
    steps: int,
    policy: Any = None,
    seed: int = 0,
    *,
    max_episode_steps: int | None = None,
    min_episode_length: int = 1,
    frame_fn: Callable[[gym.Env, Any], np.ndarray] | None = None,
    store_size: tuple[int, int] | None = None,
) -> LabelledFrames:
    """Run ``policy`` in the env for ``steps`` frames and label every frame.

    Args:
        env_fn: an env factory (``lambda: gym.make(...)``), an env, or an env id. Frames are the env's image
            observations, or ``env.render()`` when observations are not images (make the env with
            ``render_mode="rgb_array"``; e.g. an env wrapped in ``ContextObservation`` for an agent trained on
            contexts).
        label_fn: ``label_fn(env, obs, info) -> {name: value}``, called after every reset and step.
        steps: frames to record (reset frames count), across as many episodes as fit.
        policy: None (uniformly random actions from ``env.action_space``, seeded: the paper's protocol), a
            callable ``policy(obs) -> action``, or an object with SB3's ``predict(obs, deterministic)``.
        seed: seeds the first ``reset`` and the action space; later resets continue the env's RNG.
        max_episode_steps: reset the env after this many steps (a truncation: lets short runs of long games such
            as Pong hold several episodes); None: only when the env ends the episode.
        min_episode_length: drop episodes with fewer frames (the paper drops those of 64 frames or fewer; the
            last, cut-off episode counts too).
        frame_fn: ``frame_fn(env, obs) -> uint8 image`` to take frames from elsewhere.
        store_size: ``(h, w)``: store frames resized with the wrappers' resize (saves memory for long Atari runs;
            hashes are still of the raw frames).

    Returns a :class:`LabelledFrames` with ``N = steps`` rows (fewer when short episodes are dropped).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
    env, owned = open_env(env_fn)
    try:
        if frame_fn is None:
            source = frame_source_for(env)

            def frame_fn(env: gym.Env, obs: Any) -> np.ndarray:
                return obs if source == "observation" else env.render()

        env.action_space.seed(seed)
        discrete = isinstance(env.action_space, spaces.Discrete)
        no_action = 0 if discrete else np.zeros(env.action_space.shape, dtype=np.float32)
        frames, hashes, label_rows, episode_ids, step_ids, actions = [], [], [], [], [], []

        def record(obs: Any, info: dict, episode: int, t: int) -> None:
            frame = _as_rgb(frame_fn(env, obs))
            hashes.append(_hash(frame))
            if store_size is not None:
                frame = to_model_frames(frame, tuple(store_size))[0].permute(1, 2, 0).numpy()
            frames.append(frame)
            label_rows.append(dict(label_fn(env, obs, info)))
            episode_ids.append(episode)
            step_ids.append(t)
            actions.append(no_action)

        obs, info = env.reset(seed=seed)
        episode, t = 0, 0
        record(obs, info, episode, t)
        while len(frames) < steps:
            action = _policy_action(policy, env, obs, info)
            actions[-1] = action
            obs, _, terminated, truncated, info = env.step(action)
            t += 1
            record(obs, info, episode, t)
            if len(frames) >= steps:
                break
            if terminated or truncated or (max_episode_steps is not None and t >= max_episode_steps):
                obs, info = env.reset()
                episode, t = episode + 1, 0
                record(obs, info, episode, t)
    finally:
        if owned:
            env.close()

    labels = _stack_labels(label_rows)
    data = LabelledFrames(
        frames=np.stack(frames),
        labels=labels,
        variables=variables_of(label_fn, labels),
        episode_ids=np.asarray(episode_ids, dtype=np.int64),
        steps=np.asarray(step_ids, dtype=np.int64),
        actions=np.asarray(actions, dtype=np.int64 if discrete else np.float32),
        hashes=np.asarray(hashes, dtype=np.int64),
        action_space=env.action_space,
        env_id=env_id_of(env),
        metadata={"policy": "random" if policy is None else type(policy).__name__, "seed": seed},
    )
    if min_episode_length > 1:
        lengths = np.bincount(data.episode_ids)
        data = data.select_episodes(np.flatnonzero(lengths >= min_episode_length))
    return data


def _stack_labels(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    names = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != names:
            raise ValueError(
                f"label_fn must return the same variables every frame; frame {i} gave {sorted(row)}"
            )
    labels = {}
    for name in names:
        values = np.asarray([row[name] for row in rows])
        if values.ndim != 1:
            raise ValueError(f"label {name!r} must be a scalar per frame, got shape {values.shape[1:]}")
        if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
            labels[name] = values.astype(np.int64)
        elif np.issubdtype(values.dtype, np.floating):
            labels[name] = values.astype(np.float64)
        else:
            raise ValueError(f"label {name!r} must be numeric, got dtype {values.dtype}")
    return labels
