"""The models a context wrapper runs: the frozen perception model and the optional world model behind an argument.

- :func:`resolve_model`: a ``CausalPerceiverIO``, a :class:`SharedModel` holding one, or a checkpoint directory →
  the model in eval mode on the device.
- :func:`resolve_world_model`: a ``VRNN``, a :class:`SharedModel` holding one, a checkpoint directory, or None →
  the eval-mode ``VRNN`` (or None), checked against the perception model and the env's action space.
- :class:`SharedModel`: a model reference that ``copy.deepcopy`` shares (for constructor arguments recorded in
  ``env.spec``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model import VRNN
from aime_rl.world_model.config import normalise, perception_spec
from aime_rl.world_model.env import check_action_space

from .preprocessing import load_perception_model

__all__ = ["ModelOrDir", "SharedModel", "WorldModelOrDir", "resolve_model", "resolve_world_model"]


class SharedModel:
    """A reference to a model that ``copy.deepcopy`` shares instead of copying (for recorded constructor args).

    Holds a ``CausalPerceiverIO`` (``model_or_dir``) or a ``VRNN`` (``world_model``).
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __deepcopy__(self, memo: dict) -> SharedModel:
        return self

    def __repr__(self) -> str:
        return f"SharedModel({type(self.model).__name__}, context_dim={self.model.context_dim})"


ModelOrDir = CausalPerceiverIO | SharedModel | str | os.PathLike
WorldModelOrDir = Any  # a VRNN, a SharedModel holding one, or a directory written by VRNN.save_pretrained


def resolve_model(model_or_dir: ModelOrDir, device: str | torch.device = "cpu") -> CausalPerceiverIO:
    """The eval-mode model behind a model, a :class:`SharedModel` or a checkpoint directory."""
    if isinstance(model_or_dir, SharedModel):
        model_or_dir = model_or_dir.model
    return load_perception_model(model_or_dir, device)


def resolve_world_model(
    world_model: WorldModelOrDir,
    model: CausalPerceiverIO,
    device: str | torch.device = "cpu",
    action_space: spaces.Space | None = None,
) -> VRNN | None:
    """The eval-mode ``VRNN`` behind ``world_model`` (None stays None), checked against the perception ``model``.

    A directory is loaded with ``VRNN.from_pretrained(directory, model)``. Raises ``ValueError`` naming
    ``world_model`` when its sizes (``context_dim``, token grid, quantizer heads, codes) are not the perception
    model's, or when ``action_space`` (the env's, per sub-env) is not the VRNN's (``Discrete(action_dim)`` or a
    ``Box`` of ``action_dim`` elements).
    """
    if world_model is None:
        return None
    if isinstance(world_model, SharedModel):
        world_model = world_model.model
    if isinstance(world_model, (str, os.PathLike)):
        try:
            world_model = VRNN.from_pretrained(world_model, model, map_location=device)
        except ValueError as error:
            raise ValueError(f"world_model {os.fspath(world_model)!r} cannot be loaded: {error}") from error
    if not isinstance(world_model, VRNN):
        raise ValueError(
            f"world_model must be a VRNN, a checkpoint directory or None, got {type(world_model).__name__}"
        )
    if world_model.perceiver is not model:
        for name, value in perception_spec(model).items():
            got = getattr(world_model.config, name)
            if normalise(got) != normalise(value):
                raise ValueError(
                    f"world_model has {name}={got!r} but the perception model has {name}={value!r}: "
                    "use a VRNN trained on this perception model"
                )
    if action_space is not None:
        try:
            check_action_space(action_space, world_model.config)
        except ValueError as error:
            raise ValueError(f"world_model does not fit the env's actions: {error}") from error
    return world_model.eval()
