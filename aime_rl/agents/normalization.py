"""Per-feature standardisation of context observations for SB3 agents, with its statistics saved as JSON.

Why agents need it: a context vector is LayerNormed *across* its features, so its overall scale is fixed, but
*over time* each feature moves by only about 1–2 % of its magnitude (measured on Catch with the "small" preset: the
per-feature standard deviation over random play is ≈ 0.009 against a mean magnitude of ≈ 0.57). An MLP policy
then sees an almost constant input, and PPO on the raw context learned nothing in 20k steps (−6.6 against −5.0
for a random policy); with the same model and budget, standardised contexts reached −2.8 (``benchmarks/README.md``).

This is SB3's :class:`~stable_baselines3.common.vec_env.VecNormalize` on observations only (rewards are left
alone), plus a JSON file for its running mean/variance: ``VecNormalize.save`` pickles the whole wrapper, and this
project loads nothing with pickle.

Usage::

    venv = normalize_observations(VecContextObservation(make_vec_env(...), model_dir))   # statistics update
    agent = make_agent("ppo", venv); agent.learn(50_000)
    save_normalization(venv, "runs/x/agent/observation_normalization.json")
    eval_venv = load_normalization(VecContextObservation(...), "runs/x/agent/observation_normalization.json")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ..utils.io import atomic_write_json, read_json

__all__ = ["NORMALIZATION_NAME", "load_normalization", "normalize_observations", "save_normalization"]

NORMALIZATION_NAME = "observation_normalization.json"
FORMAT_VERSION = 1


def _vector_keys(space: spaces.Space) -> list[str] | None:
    """Keys of the float vector entries of a Dict space (images and discrete entries are left alone); None for a
    Box space. ``ValueError`` if there is nothing to standardise."""
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return None
    if isinstance(space, spaces.Dict):
        keys = [
            key
            for key, sub in space.spaces.items()
            if isinstance(sub, spaces.Box) and len(sub.shape) == 1 and np.issubdtype(sub.dtype, np.floating)
        ]
        if keys:
            return keys
    raise ValueError(
        f"normalize_observations needs vector observations Box([D]) or a Dict with such entries, got {space}"
    )


def normalize_observations(venv: VecEnv, training: bool = True, clip: float = 10.0) -> VecNormalize:
    """``venv`` wrapped so that its vector observations ``[num_envs, D]`` are standardised per feature,
    ``(obs − running mean) / sqrt(running var + 1e-8)``, clipped to ``±clip``.

    ``training=True`` updates the running statistics from every step (use it while the agent trains);
    ``training=False`` freezes them (evaluation; see :func:`load_normalization`). Rewards are not changed.
    For Dict observations (``keep_frame=True``) only the float vector entries are standardised.
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    keys = _vector_keys(venv.observation_space)
    return VecNormalize(
        venv, training=training, norm_obs=True, norm_reward=False, clip_obs=clip, norm_obs_keys=keys
    )


def _stats_to_json(stats: RunningMeanStd) -> dict[str, Any]:
    return {"mean": stats.mean.tolist(), "var": stats.var.tolist(), "count": float(stats.count)}


def _stats_from_json(entry: Any, shape: tuple[int, ...], where: str) -> RunningMeanStd:
    try:
        mean = np.asarray(entry["mean"], dtype=np.float64)
        var = np.asarray(entry["var"], dtype=np.float64)
        count = float(entry["count"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected mean, var and count, got {entry!r:.200}") from err
    if mean.shape != shape or var.shape != shape:
        raise ValueError(
            f"{where}: statistics of shape {mean.shape}/{var.shape} do not fit observations of shape {shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()):
        raise ValueError(f"{where}: mean and var must be finite with var >= 0")
    if not (np.isfinite(count) and count > 0):
        raise ValueError(f"{where}: count must be finite and > 0, got {count}")
    stats = RunningMeanStd(shape=shape)
    stats.mean, stats.var, stats.count = mean, var, count
    return stats


def _clip_from_json(value: Any, where: str) -> float:
    try:
        clip = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: clip must be a number, got {value!r}") from err
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"{where}: clip must be finite and > 0, got {clip}")
    return clip


def save_normalization(venv: VecNormalize, path: str | os.PathLike) -> None:
    """Write the running observation statistics of ``venv`` (made by :func:`normalize_observations`) to ``path``
    as JSON, atomically: ``{"version", "clip", "stats": {key: {"mean", "var", "count"}}}`` (key ``""`` for a Box)."""
    if not isinstance(venv, VecNormalize):
        raise ValueError(
            f"save_normalization needs the VecNormalize from normalize_observations, got {venv!r}"
        )
    rms = venv.obs_rms if isinstance(venv.obs_rms, dict) else {"": venv.obs_rms}
    stats = {key: _stats_to_json(value) for key, value in rms.items()}
    atomic_write_json(path, {"version": FORMAT_VERSION, "clip": float(venv.clip_obs), "stats": stats})


def load_normalization(venv: VecEnv, path: str | os.PathLike, training: bool = False) -> VecNormalize:
    """``venv`` wrapped by :func:`normalize_observations` with the statistics saved at ``path``, frozen unless
    ``training``. A missing or corrupted file, or statistics that do not fit ``venv``'s observations, raise
    ``ValueError`` naming the file."""
    data = read_json(path)
    where = f"observation normalization file {path}"
    if data.get("version") != FORMAT_VERSION or not isinstance(data.get("stats"), dict):
        raise ValueError(f"{where}: not a version-{FORMAT_VERSION} statistics file")
    wrapped = normalize_observations(venv, training=training, clip=_clip_from_json(data.get("clip"), where))
    space = venv.observation_space
    keys = _vector_keys(space)
    expected = [""] if keys is None else keys
    if sorted(data["stats"]) != sorted(expected):
        raise ValueError(f"{where}: statistics for {sorted(data['stats'])}, observations have {expected}")
    if keys is None:
        wrapped.obs_rms = _stats_from_json(data["stats"][""], space.shape, where)
    else:
        wrapped.obs_rms = {
            key: _stats_from_json(data["stats"][key], space.spaces[key].shape, where) for key in keys
        }
    return wrapped
