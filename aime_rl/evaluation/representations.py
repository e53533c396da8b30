"""Representations to probe: labelled frames ``[N, H, W, 3]`` → features float32 ``[N, D]``, one row per frame.

- ``"context"``: the causal context as the wrappers compute it: frames resized with the wrappers' uint8 resize
  (:func:`aime_rl.wrappers.to_model_frames`) and streamed through ``CausalPerceiverIO.stream(window=…)``, with a
  reset at every episode start, so nothing leaks across episodes. Episodes run in parallel lanes of one batched
  stream (each lane plays its episodes one after the other); a row's context equals a fresh batch-1 stream's.
- ``"belief"``: ``[c_t, h_{t-1}, z_t]``, the context plus the belief of a VRNN world model's posterior filter
  (``VRNNFilter``, fed the stream's tokens and the previous action, reset per episode): what
  ``ContextObservation(world_model=…)`` observes.
- ``"latents"``: the N latents the context is pooled from, side by side (``[N_latents · D]`` per frame, from the
  same stream): probed beside ``"context"``, it tells whether a variable is lost by the latents or by the pooling.
- ``"untrained"``: the context of a fresh model of the same configuration (fixed seed): what the architecture
  gives without training. Its whitening (``context_whitening``) is fitted to its own contexts of the probed frames
  (label-free), as ``train-context`` fits a trained model's to its contexts of the replay: a fresh model's whitening
  is the identity, and a probe of an unwhitened context reads far less of what it holds (Riverraid 0.10 against
  0.20 whitened; Pong 0.39 against 0.66 with the same trained weights), which made the baseline look weaker than
  the architecture is.
- ``"random_cnn"``: a randomly initialised Nature-DQN conv stack (32×8/4, 64×4/2, 64×3/1, ReLU) + linear to 256
  on the frame resized to 84×84 (fixed seed).
- ``"pixels"``: the frame resized (32×32 by default), flattened, in ``[0, 1]``.
- ``"frame_stack"``: the last 4 such frames of the episode (the first frame repeated at the start), flattened.
- ``"majority"``: no features: the probe predicts the training split's most frequent value (mean for
  continuous variables).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model import VRNNFilter
from aime_rl.wrappers.core import belief_actions
from aime_rl.wrappers.models import resolve_world_model
from aime_rl.wrappers.preprocessing import load_perception_model, to_model_frames

from .labels import LabelledFrames

__all__ = [
    "MODEL_REPRESENTATIONS",
    "REPRESENTATIONS",
    "NatureCNN",
    "compute_representations",
    "frame_stack_features",
    "lane_schedule",
    "pixel_features",
    "random_cnn_features",
    "resized_frames",
    "stream_features",
    "untrained_copy",
    "whitened_as_calibrated",
]

#: Every representation name :func:`compute_representations` knows.
REPRESENTATIONS = (
    "context",
    "latents",
    "belief",
    "untrained",
    "random_cnn",
    "pixels",
    "frame_stack",
    "majority",
)
#: The ones that need a perception model.
MODEL_REPRESENTATIONS = ("context", "latents", "belief", "untrained")


# ------------------------------------------------------------------------------------------- streamed contexts


def resized_frames(frames: np.ndarray, size: tuple[int, int], chunk: int = 1024) -> torch.Tensor:
    """Env frames uint8 ``[N, H, W, 3]`` → uint8 ``[N, 3, h, w]`` with the wrappers' resize, ``chunk`` at a time."""
    size = tuple(int(s) for s in size)
    parts = [to_model_frames(frames[i : i + chunk], size) for i in range(0, len(frames), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 3, *size, dtype=torch.uint8)


def lane_schedule(episode_ids: np.ndarray, lanes: int) -> list[np.ndarray]:
    """Assign whole episodes to at most ``lanes`` lanes, balancing their lengths (longest episode first).

    Returns one int64 array of row indices per lane: the lane's episodes one after the other, each in time order.
    """
    starts = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1]])
    ends = np.r_[starts[1:], len(episode_ids)]
    order = np.argsort(-(ends - starts), kind="stable")
    count = max(1, min(lanes, len(starts)))
    loads = np.zeros(count, dtype=np.int64)
    assigned: list[list[int]] = [[] for _ in range(count)]
    for e in order:
        lane = int(np.argmin(loads))
        assigned[lane].append(int(e))
        loads[lane] += ends[e] - starts[e]
    rows = []
    for episodes in assigned:
        episodes.sort()
        rows.append(np.concatenate([np.arange(starts[e], ends[e]) for e in episodes]).astype(np.int64))
    return rows


@torch.inference_mode()
def stream_features(
    data: LabelledFrames,
    model: CausalPerceiverIO,
    window: int | None = 16,
    world_model: Any = None,
    lanes: int = 64,
    device: str | torch.device = "cpu",
    timescale: str = "fast",
    latents: bool = False,
) -> dict[str, np.ndarray]:
    """The context (and belief, and latents) of every frame, streamed per episode.

    Args:
        data: labelled frames (episodes contiguous, in order; ``data.actions`` feed the belief filter).
        model: the perception model (used in eval mode).
        window: the stream's attention window, as in ``ContextObservation(window=…)``.
        world_model: None, a ``VRNN`` on ``model`` or its checkpoint directory.
        lanes: episodes streamed in parallel (rows of one batched stream).
        latents: also return the latents the context is pooled from.

    Returns ``{"context": float32 [N, context_dim]}`` plus ``"belief": float32 [N, context_dim + belief_dim]``
    (``[c_t, h_{t-1}, z_t]``) with a world model and ``"latents": float32 [N, num_latents · context_dim]`` with
    ``latents=True`` (one slot more with ``local_motion_context``: the motion slot the pooling also reads).
    """
    model = model.to(device).eval()
    vrnn = resolve_world_model(world_model, model, device, data.action_space)
    schedule = lane_schedule(data.episode_ids, lanes)
    b = len(schedule)
    length = max(len(rows) for rows in schedule)
    frames = resized_frames(data.frames, model.frame_size)  # uint8 [N, 3, h, w]
    starts = data.episode_starts()
    stream = model.stream(b, window=window, timescale=timescale)
    belief_filter = None
    if vrnn is not None:
        belief_filter = VRNNFilter(vrnn, b)
    context = np.zeros((len(data), model.context_dim), dtype=np.float32)
    all_latents = None
    belief = None if vrnn is None else np.zeros((len(data), vrnn.belief_dim), dtype=np.float32)
    for t in range(length):
        # lanes that ran out of episodes repeat their last row; their outputs are not kept
        index = np.array([rows[min(t, len(rows) - 1)] for rows in schedule], dtype=np.int64)
        active = np.array([t < len(rows) for rows in schedule])
        reset = torch.from_numpy(starts[index] & active)
        if bool(reset.any()):
            stream.reset(reset)
            if belief_filter is not None:
                belief_filter.reset(reset)
        c = stream.step(frames[index].to(device))  # [B, D]
        keep = index[active]
        context[keep] = c[torch.from_numpy(active).to(c.device)].float().cpu().numpy()
        if latents:
            step_latents = stream.last_latents.flatten(1)[torch.from_numpy(active).to(c.device)]
            if all_latents is None:
                all_latents = np.zeros((len(data), step_latents.shape[1]), dtype=np.float32)
            all_latents[keep] = step_latents.float().cpu().numpy()
        if belief_filter is not None:
            previous = np.where(starts[index], index, index - 1)  # the action taken at the previous frame
            prev_action = belief_actions(data.action_space, data.actions[previous], b)
            h_z = belief_filter.step(c, stream.last_tokens, prev_action)
            belief[keep] = h_z[torch.from_numpy(active).to(h_z.device)].float().cpu().numpy()
    out = {"context": context}
    if all_latents is not None:
        out["latents"] = all_latents
    if belief is not None:
        out["belief"] = np.concatenate([context, belief], axis=1)
    return out


def untrained_copy(model: CausalPerceiverIO, seed: int = 0) -> CausalPerceiverIO:
    """A fresh ``CausalPerceiverIO`` of ``model``'s configuration, initialised under ``seed`` (eval mode).

    The global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CausalPerceiverIO.from_config(model.config).eval()


def whitened_as_calibrated(model: CausalPerceiverIO, contexts: np.ndarray) -> np.ndarray:
    """Contexts ``[N, D]`` of ``model``'s fast timescale, streamed through a whitening that was never fitted (the
    identity: a fresh model's) → whitened ``[N, D]`` with statistics fitted to them, as
    ``PerceiverTokenPredictor.calibrate_whitening`` fits a trained model's (``model`` keeps them). Unchanged for a
    model without ``context_whitening``; ``ValueError`` for one whose whitening was already fitted."""
    whitening = model.predictor.whitening
    if whitening is None or len(contexts) < 2:
        return contexts
    fast = whitening["fast"]
    if fast.fitted:
        raise ValueError("the model's whitening is already fitted: its contexts are not the unwhitened ones")
    x = torch.from_numpy(np.ascontiguousarray(contexts)).to(fast.running_mean)
    fast.update(x, cumulative=True)
    with torch.no_grad():
        return fast(x).cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------- pixel baselines


class NatureCNN(nn.Module):
    """The DQN encoder (Mnih et al. 2015): conv 32×8/4, 64×4/2, 64×3/1 with ReLUs, then a linear layer.

    Input float ``[B, C, H, W]`` in ``[0, 1]``; output ``[B, out_dim]`` (no activation on the last layer).
    """

    def __init__(self, in_channels: int = 3, size: tuple[int, int] = (84, 84), out_dim: int = 256):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, *size)).shape[1]
        self.linear = nn.Linear(flat, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x))


@torch.inference_mode()
def random_cnn_features(
    data: LabelledFrames,
    size: tuple[int, int] = (84, 84),
    seed: int = 0,
    out_dim: int = 256,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """A random :class:`NatureCNN` (PyTorch's default init under ``seed``) on frames resized to ``size``.

    Returns float32 ``[N, out_dim]``. The global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cnn = NatureCNN(3, tuple(size), out_dim).to(device).eval()
    out = []
    frames = resized_frames(data.frames, size)
    for start in range(0, len(data), batch_size):
        batch = frames[start : start + batch_size].to(device).float() / 255.0
        out.append(cnn(batch).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def pixel_features(data: LabelledFrames, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Frames resized to ``size`` (the wrappers' resize), float32 ``[N, 3 * h * w]`` in ``[0, 1]``."""
    frames = resized_frames(data.frames, size)  # uint8 [N, 3, h, w]
    return (frames.reshape(len(data), -1).float() / 255.0).numpy()


def frame_stack_features(
    data: LabelledFrames, size: tuple[int, int] = (32, 32), stack: int = 4
) -> np.ndarray:
    """The last ``stack`` resized frames of the episode, oldest first: float32 ``[N, stack * 3 * h * w]``.

    At the start of an episode the first frame is repeated (no frame of another episode is used).
    """
    if stack < 1:
        raise ValueError(f"stack must be >= 1, got {stack}")
    pixels = pixel_features(data, size)
    rows = np.arange(len(data))
    parts = [pixels[rows - np.minimum(lag, data.steps)] for lag in range(stack - 1, -1, -1)]
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------------------------------------------- all of them


def compute_representations(
    data: LabelledFrames,
    names: Sequence[str] = ("context", "untrained", "random_cnn", "pixels", "frame_stack", "majority"),
    model: CausalPerceiverIO | str | os.PathLike | None = None,
    world_model: Any = None,
    window: int | None = 16,
    seed: int = 0,
    lanes: int = 64,
    device: str | torch.device = "cpu",
    pixel_size: tuple[int, int] = (32, 32),
    cnn_size: tuple[int, int] = (84, 84),
    stack: int = 4,
) -> dict[str, np.ndarray | None]:
    """``name -> float32 [N, D]`` for each requested representation (``"majority"`` → None: no features).

    ``model`` (a ``CausalPerceiverIO`` or its directory) is needed for ``context``, ``latents``, ``belief`` and
    ``untrained``; ``world_model`` for ``belief``. Raises ``ValueError`` for unknown names or missing models.
    """
    unknown = [n for n in names if n not in REPRESENTATIONS]
    if unknown:
        raise ValueError(f"unknown representations {unknown}; choose from {list(REPRESENTATIONS)}")
    if any(n in MODEL_REPRESENTATIONS for n in names) and model is None:
        raise ValueError(f"representations {[n for n in names if n in MODEL_REPRESENTATIONS]} need a model")
    if "belief" in names and world_model is None:
        raise ValueError("representation 'belief' needs a world_model (a VRNN or its checkpoint directory)")
    out: dict[str, np.ndarray | None] = {}
    if model is not None and any(n in MODEL_REPRESENTATIONS for n in names):
        model = load_perception_model(model, device)
        if {"context", "latents", "belief"} & set(names):
            streamed = stream_features(
                data,
                model,
                window,
                world_model if "belief" in names else None,
                lanes,
                device,
                latents="latents" in names,
            )
            out.update({k: v for k, v in streamed.items() if k in names})
        if "untrained" in names:
            fresh = untrained_copy(model, seed).to(device)
            contexts = stream_features(data, fresh, window, None, lanes, device)["context"]
            out["untrained"] = whitened_as_calibrated(fresh, contexts)
    for name in names:
        if name == "random_cnn":
            out[name] = random_cnn_features(data, cnn_size, seed, device=device)
        elif name == "pixels":
            out[name] = pixel_features(data, pixel_size)
        elif name == "frame_stack":
            out[name] = frame_stack_features(data, pixel_size, stack)
        elif name == "majority":
            out[name] = None
    return {name: out[name] for name in names}
