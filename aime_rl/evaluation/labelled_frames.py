"""The labelled data of the state probes: :class:`LabelledFrames` (frames of whole episodes with the true state of
every frame) and :class:`VariableInfo` (what each label is), saved as one ``.npz`` without pickles.

:func:`aime_rl.evaluation.labels.collect_labelled` makes them; the probes (:mod:`aime_rl.evaluation.probes`) read
them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from .atari_ram import game_name

__all__ = ["Kind", "LabelledFrames", "VariableInfo"]

Kind = Literal["discrete", "continuous"]


@dataclass(frozen=True)
class VariableInfo:
    """What a label is.

    Attributes:
        kind: ``"discrete"`` (a linear softmax probe, weighted F1) or ``"continuous"`` (ridge regression, R²).
        categories: the paper's categories it counts in (see :mod:`aime_rl.evaluation.atari_ram`); may be empty.
        num_classes: for discrete labels with values ``0 … num_classes - 1`` (256 for RAM bytes): the probe is a
            softmax over all of them. None: the classes are the values that occur in the data.
    """

    kind: Kind
    categories: tuple[str, ...] = ()
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "continuous"):
            raise ValueError(f"VariableInfo.kind must be 'discrete' or 'continuous', got {self.kind!r}")
        if self.num_classes is not None and (self.kind != "discrete" or self.num_classes < 1):
            raise ValueError(
                f"VariableInfo.num_classes must be None or >= 1 for a discrete variable, got {self.num_classes}"
            )


@dataclass
class LabelledFrames:
    """Frames of whole episodes, in order, with their labels.

    Attributes:
        frames: uint8 ``[N, H, W, 3]``: the raw env frames (or resized ones, see ``collect_labelled(store_size=)``).
        labels: ``name -> [N]`` (int64 for discrete variables, float64 for continuous ones).
        variables: ``name -> VariableInfo``.
        episode_ids: int64 ``[N]``, ``0 … E - 1``; the rows of an episode are contiguous and in time order.
        steps: int64 ``[N]``, the step within the episode (0 at the reset frame).
        actions: the action taken at each frame, int64 ``[N]`` (``Discrete``) or float32 ``[N, A]``; 0 where none.
        hashes: int64 ``[N]``: a 64-bit hash of each raw frame's bytes (for duplicate removal).
        action_space: the env's action space (None when unknown).
        env_id: the env's id (``env.spec.id``) when it has one.
    """

    frames: np.ndarray
    labels: dict[str, np.ndarray]
    variables: dict[str, VariableInfo]
    episode_ids: np.ndarray
    steps: np.ndarray
    actions: np.ndarray
    hashes: np.ndarray
    action_space: spaces.Space | None = None
    env_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [N, H, W, 3], got {self.frames.dtype} {self.frames.shape}"
            )
        for name, array in {
            "episode_ids": self.episode_ids,
            "steps": self.steps,
            "actions": self.actions,
            "hashes": self.hashes,
            **{f"labels[{k!r}]": v for k, v in self.labels.items()},
        }.items():
            if len(array) != n:
                raise ValueError(f"{name} must have {n} rows (one per frame), got shape {np.shape(array)}")
        if set(self.labels) != set(self.variables):
            raise ValueError(
                f"labels and variables must name the same variables, got {sorted(self.labels)} and "
                f"{sorted(self.variables)}"
            )
        if n and (np.any(np.diff(self.episode_ids) < 0) or self.episode_ids[0] < 0):
            raise ValueError(
                "episode_ids must be non-negative and non-decreasing (episodes contiguous, in order)"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_episodes(self) -> int:
        return int(len(np.unique(self.episode_ids)))

    @property
    def game(self) -> str | None:
        """The AtariARI game key of :attr:`env_id` (``"pong"``), or None."""
        return game_name(self.env_id)

    def episode_starts(self) -> np.ndarray:
        """bool ``[N]``: True at the first frame of every episode."""
        starts = np.ones(len(self), dtype=bool)
        starts[1:] = self.episode_ids[1:] != self.episode_ids[:-1]
        return starts

    def episode_slices(self) -> list[slice]:
        """The rows of each episode, in order."""
        starts = np.flatnonzero(self.episode_starts())
        ends = np.append(starts[1:], len(self))
        return [slice(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]

    def select_episodes(self, episodes: np.ndarray | list[int]) -> LabelledFrames:
        """The frames of the given episode ids, in their original order, renumbered ``0 … k - 1``."""
        keep = np.isin(self.episode_ids, np.asarray(episodes))
        _, renumbered = np.unique(self.episode_ids[keep], return_inverse=True)
        return LabelledFrames(
            frames=self.frames[keep],
            labels={k: v[keep] for k, v in self.labels.items()},
            variables=dict(self.variables),
            episode_ids=renumbered.astype(np.int64),
            steps=self.steps[keep],
            actions=self.actions[keep],
            hashes=self.hashes[keep],
            action_space=self.action_space,
            env_id=self.env_id,
            metadata=dict(self.metadata),
        )

    # -- save / load -------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` (no pickles): the arrays, plus the variables, env id and action space as JSON."""
        meta = {
            "variables": {k: [v.kind, list(v.categories), v.num_classes] for k, v in self.variables.items()},
            "env_id": self.env_id,
            "action_space": _space_to_json(self.action_space),
            "metadata": self.metadata,
        }
        arrays = {
            "frames": self.frames,
            "episode_ids": self.episode_ids,
            "steps": self.steps,
            "actions": self.actions,
            "hashes": self.hashes,
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        arrays.update({f"label/{k}": v for k, v in self.labels.items()})
        tmp = f"{os.fspath(path)}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelledFrames:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            labels = {k[len("label/") :]: archive[k] for k in archive.files if k.startswith("label/")}
            return cls(
                frames=archive["frames"],
                labels=labels,
                variables={k: VariableInfo(v[0], tuple(v[1]), v[2]) for k, v in meta["variables"].items()},
                episode_ids=archive["episode_ids"],
                steps=archive["steps"],
                actions=archive["actions"],
                hashes=archive["hashes"],
                action_space=_space_from_json(meta["action_space"]),
                env_id=meta["env_id"],
                metadata=meta.get("metadata", {}),
            )


def _space_to_json(space: spaces.Space | None) -> dict | None:
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "dtype": str(space.dtype),
        }
    return None


def _space_from_json(data: dict | None) -> spaces.Space | None:
    if data is None:
        return None
    if data["type"] == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    return spaces.Box(np.array(data["low"]), np.array(data["high"]), dtype=np.dtype(data["dtype"]))
