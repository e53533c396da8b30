"""When a periodic callback fires, and how its settings are spelled (shared by every layer's callbacks).

The periodic callbacks (:class:`~aime_rl.agents.RolloutVideoCallback`,
:class:`~aime_rl.agents.PerceptionTrainingCallback`, :class:`~aime_rl.world_model.WorldModelRolloutCallback`) share
SB3's :class:`~stable_baselines3.common.callbacks.EveryNTimesteps` rule: an event is due once ``every_n_steps`` env
steps (``model.num_timesteps``, summed over sub-envs) have passed since the step of the last event
(:func:`is_due`). A callback records that step itself, only when its event did happen, so an event that could not
run (e.g. no replay episode long enough yet) is retried at the next step.

:func:`renamed_keywords` keeps an old keyword spelling working for a while, with a ``DeprecationWarning`` that names
the new keyword.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

__all__ = ["is_due", "renamed_keywords"]

FunctionT = TypeVar("FunctionT", bound=Callable)


def is_due(num_timesteps: int, last_step: int, every_n_steps: int) -> bool:
    """True once ``every_n_steps`` env steps have passed since ``last_step`` (SB3's ``EveryNTimesteps`` test)."""
    return num_timesteps - last_step >= every_n_steps


def renamed_keywords(**renames: str) -> Callable[[FunctionT], FunctionT]:
    """Decorator: accept each old keyword ``old=new`` of ``renames`` in place of ``new``, with a
    ``DeprecationWarning`` naming ``new``; giving both is a ``TypeError``. The signature shown is the new one."""

    def decorate(function: FunctionT) -> FunctionT:
        owner = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{owner}() got both {old}= (deprecated) and {new}=; pass only {new}=")
                warnings.warn(
                    f"{owner}: the keyword {old}= is deprecated, use {new}= instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper

    return decorate
