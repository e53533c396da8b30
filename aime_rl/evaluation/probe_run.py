"""``probe_model``: collect labelled frames from any Gymnasium env, compute the representations, run the probes.

::

    report = probe_model("runs/catch/model", lambda: gym.make("aime_rl/Catch-v0"), steps=5000)
    print(report.to_markdown())
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from aime_rl.envs.catch import CatchEnv
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers.preprocessing import load_perception_model

from .atari_ram import game_name
from .labels import (
    EnvSource,
    LabelFn,
    LabelledFrames,
    atari_ram_labels,
    cartpole_labels,
    catch_labels,
    collect_labelled,
    env_id_of,
    open_env,
)
from .probes import ProbeConfig, probe_representations
from .report import ProbeReport
from .representations import MODEL_REPRESENTATIONS, REPRESENTATIONS, compute_representations

__all__ = ["DEFAULT_REPRESENTATIONS", "default_label_fn", "probe_model"]

#: What :func:`probe_model` probes by default (plus ``"belief"`` when a world model is given).
DEFAULT_REPRESENTATIONS = ("context", "untrained", "random_cnn", "pixels", "frame_stack", "majority")


def default_label_fn(env: gym.Env) -> LabelFn:
    """The labels an env has without being told: Catch's or CartPole's true state, or the RAM bytes of an annotated
    ALE game.

    Raises ``ValueError`` for any other env (pass ``label_fn``).
    """
    if isinstance(env.unwrapped, CatchEnv):
        return catch_labels
    if isinstance(env.unwrapped, CartPoleEnv):
        return cartpole_labels
    env_id = env_id_of(env)
    game = game_name(env_id)
    if game is None and hasattr(env.unwrapped, "ale"):
        game = game_name(str(getattr(env.unwrapped, "_game", "")))  # ALE envs made without an id
    if game is not None and hasattr(env.unwrapped, "ale"):
        return atari_ram_labels(game)
    raise ValueError(
        f"no default labels for env {env_id or type(env.unwrapped).__name__}: pass label_fn(env, obs, info) -> dict "
        "(defaults exist for aime_rl/Catch-v0, CartPole-v1 and ALE games with RAM annotations)"
    )


def probe_model(
    model_or_dir: CausalPerceiverIO | str | os.PathLike | None,
    env: EnvSource,
    label_fn: LabelFn | None = None,
    steps: int = 10_000,
    window: int | None = 16,
    world_model: Any = None,
    representations: Sequence[str] | None = None,
    seed: int = 0,
    *,
    policy: Any = None,
    max_episode_steps: int | None = None,
    min_episode_length: int = 1,
    config: ProbeConfig | None = None,
    data: LabelledFrames | None = None,
    device: str | torch.device = "cpu",
    lanes: int = 64,
    logdir: str | os.PathLike | None = None,
) -> ProbeReport:
    """Probe what a perception model's context (and baselines) know about the env's true state.

    Args:
        model_or_dir: a ``CausalPerceiverIO`` or its checkpoint directory (None when no model representation is
            asked for).
        env: an env factory (``lambda: make_env(spec)``), an env, or an env id (``"ALE/Pong-v5"``). Frames come
            from its image observations, or ``render()`` with ``render_mode="rgb_array"``.
        label_fn: ``label_fn(env, obs, info) -> {name: value}``; default by env (:func:`default_label_fn`).
        steps: frames to collect (random policy unless ``policy``), split 70/10/20 by episode.
        window: the context stream's window (use the agent's, e.g. the run's ``window``).
        world_model: a ``VRNN`` on the model, or its directory: adds the ``"belief"`` representation.
        representations: names from :data:`~aime_rl.evaluation.representations.REPRESENTATIONS`; default
            :data:`DEFAULT_REPRESENTATIONS` (+ ``"belief"`` with a world model).
        seed: data collection, the untrained copy and the random CNN, the split and the probes.
        policy, max_episode_steps, min_episode_length: see :func:`collect_labelled`.
        config: probe settings (:class:`ProbeConfig`; its ``seed`` is replaced by ``seed``). Without one, the
            probes train on ``device``.
        data: labelled frames already collected (then ``env``, ``label_fn``, ``steps`` and ``policy`` are unused).
        lanes: episodes streamed in parallel when computing contexts.
        logdir: also write TensorBoard scalars there.

    Raises ``ValueError`` for an env without default labels and no ``label_fn``, unknown representations, or a
    model representation without a model.
    """
    if representations is None:
        representations = DEFAULT_REPRESENTATIONS + (("belief",) if world_model is not None else ())
        if model_or_dir is None:
            representations = tuple(r for r in representations if r not in MODEL_REPRESENTATIONS)
    representations = tuple(representations)
    unknown = [r for r in representations if r not in REPRESENTATIONS]
    if unknown:
        raise ValueError(f"unknown representations {unknown}; choose from {list(REPRESENTATIONS)}")
    needs_model = [r for r in representations if r in MODEL_REPRESENTATIONS]
    if needs_model and model_or_dir is None:
        raise ValueError(f"representations {needs_model} need model_or_dir")
    if "belief" in representations and world_model is None:
        raise ValueError("representation 'belief' needs world_model")
    model = load_perception_model(model_or_dir, device) if needs_model else None

    if data is None:
        made, owned = open_env(env)
        try:
            fn = label_fn or default_label_fn(made)
            data = collect_labelled(
                made,
                fn,
                steps,
                policy=policy,
                seed=seed,
                max_episode_steps=max_episode_steps,
                min_episode_length=min_episode_length,
            )
        finally:
            if owned:
                made.close()

    features = compute_representations(
        data,
        representations,
        model=model,
        world_model=world_model,
        window=window,
        seed=seed,
        lanes=lanes,
        device=device,
    )
    config = ProbeConfig(**{**(vars(config) if config else {"device": str(device)}), "seed": seed})
    metadata = {
        "window": window,
        "representations": list(representations),
        "model": os.fspath(model_or_dir) if isinstance(model_or_dir, (str, os.PathLike)) else None,
        "world_model": os.fspath(world_model) if isinstance(world_model, (str, os.PathLike)) else None,
        **data.metadata,
    }
    report = probe_representations(data, features, config, metadata=metadata)
    if logdir is not None:
        report.log_tensorboard(logdir)
    return report
