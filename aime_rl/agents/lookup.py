"""Find what a callback needs in the agent's training env and logger, when it is not given explicitly.

- :func:`find_context_envs`: the :class:`~aime_rl.wrappers.VecContextObservation` that computes the observations;
- :func:`find_replay_store`: the store of the :class:`~aime_rl.replay.VecRecordFrames` under it;
- :func:`find_tensorboard_writer`: the ``SummaryWriter`` of SB3's TensorBoard output (``tensorboard_log=``),
  re-exported from :mod:`aime_rl.utils.tensorboard` (the world model's rollout callback uses it too);
- :func:`reset_context_stream`: restart a context wrapper's stream after its model's weights changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_wrapper

from aime_rl.replay.recorder import VecRecordFrames
from aime_rl.replay.store import ReplayStore
from aime_rl.utils.tensorboard import find_tensorboard_writer
from aime_rl.wrappers.vec_context import VecContextObservation

__all__ = [
    "StoreLike",
    "find_context_envs",
    "find_replay_store",
    "find_tensorboard_writer",
    "reset_context_stream",
]

StoreLike = ReplayStore | str | os.PathLike


def find_context_envs(
    venv: VecEnv | None,
    context_envs: VecContextObservation | Sequence[VecContextObservation] | None = None,
) -> list[VecContextObservation]:
    """The context wrappers to use: ``context_envs`` when given, else the one in ``venv``'s wrapper chain.

    Raises ``ValueError`` when there is none.
    """
    if isinstance(context_envs, VecContextObservation):
        return [context_envs]
    if context_envs is not None:
        found = list(context_envs)
        bad = [type(env).__name__ for env in found if not isinstance(env, VecContextObservation)]
        if bad or not found:
            raise ValueError(f"context_envs must be VecContextObservation wrappers, got {bad or 'none'}")
        return found
    wrapper = unwrap_vec_wrapper(venv, VecContextObservation) if venv is not None else None
    if wrapper is None:
        raise ValueError(
            f"no VecContextObservation in the training env ({type(venv).__name__}); wrap the env with it or pass "
            "context_envs=... explicitly"
        )
    return [wrapper]


def find_replay_store(venv: VecEnv | None, store: StoreLike | None = None) -> ReplayStore:
    """The replay store to sample from: ``store`` (a store or a directory, opened read-only) or the store of the
    :class:`VecRecordFrames` in ``venv``'s wrapper chain. Raises ``ValueError`` when there is none."""
    if isinstance(store, ReplayStore):
        return store
    if store is not None:
        return ReplayStore.open(store)
    recorder = unwrap_vec_wrapper(venv, VecRecordFrames) if venv is not None else None
    if recorder is None:
        raise ValueError(
            f"no VecRecordFrames in the training env ({type(venv).__name__}) and no store given; record frames "
            "with VecRecordFrames under the context wrapper or pass store=<replay directory>"
        )
    return recorder.store


def reset_context_stream(env: VecContextObservation) -> None:
    """Restart the context (and belief) of every sub-env of ``env`` (caches emptied; the episodes themselves go
    on): :meth:`VecContextObservation.reset_context`.

    Call it after changing the weights of ``env.model`` so no cache computed by the old weights is reused.
    """
    env.reset_context()
