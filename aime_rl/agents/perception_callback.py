"""Train the perception model on recorded frames while the agent learns: :class:`PerceptionTrainingCallback`.

The callback finds what it needs in the agent's training env when it is not given explicitly
(:mod:`aime_rl.agents.lookup`): the :class:`~aime_rl.wrappers.VecContextObservation` that computes the observations
(its ``model``) and the :class:`~aime_rl.replay.VecRecordFrames` under it that records raw frames into a replay
store. It trains a copy of the model and pushes the new weights into the running wrapper(s). **Read the caveats
below before turning it on.**

Caveats of training the perception model during RL
--------------------------------------------------
**The features move under the policy.** Every update changes the map from frames to contexts, so the agent's
observations are non-stationary: the value function and the policy were fitted to contexts of the old model, and a
replay buffer (DQN/SAC) keeps contexts computed by old models. Small learning rates, few gradient steps and rare
updates keep the drift small; a large update can wreck a trained policy. This is why joint training is an option,
off by default in the pipeline: the recommended setup trains the perception model first and keeps it frozen. With
standardised contexts (:func:`~aime_rl.agents.normalize_observations`) the running statistics mix every model's
contexts and, after many steps, follow a new model only slowly; features that move far can sit at the clip.

**In-flight episodes restart their context.** The wrapper's :class:`~aime_rl.perception.context_stream.ContextStream`
caches keys/values (and the tokenizer's conv activations) of the last ``window`` frames, computed by the old
weights. Mixing them with new weights gives a context neither model would produce, so after each update the stream
is reset for every sub-env (:func:`reset_context_stream`): the episodes continue, but their context starts again
from the next frame, as if the episode began there, and rebuilds its ``window`` frames of history over the next
steps. Nothing is recomputed from past frames (the wrapper does not keep them). Updates run at the end of a
rollout (``_on_rollout_end``), so one PPO/A2C rollout never mixes contexts of two models.

**The tokenizer and the context model are coupled.** The context model reads the tokenizer's codes; training the
tokenizer (``parts`` containing ``"tokenizer"``) changes what the codes mean, and the context model only follows
if it is trained as well. The default trains the context model alone, with the tokenizer frozen.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay.store import ReplayStore
from aime_rl.training.optim import make_optimizer
from aime_rl.training.perception import predictor_loss_fn, tokenizer_loss
from aime_rl.training.trainer import TrainerConfig, scalar_metrics
from aime_rl.utils.schedule import is_due
from aime_rl.utils.validation import check_positive
from aime_rl.wrappers.vec_context import VecContextObservation

from .lookup import StoreLike, find_context_envs, find_replay_store, reset_context_stream
from .sampling import device_of, has_windows, isolated_rng, sample_frames

__all__ = ["PERCEPTION_PARTS", "PerceptionTrainingCallback"]

#: What :class:`PerceptionTrainingCallback` can train, in the order it trains them.
PERCEPTION_PARTS = ("tokenizer", "context_model")


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``module``'s parameters for a block, then restore each flag."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _mean_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every key over a list of scalar dicts (keys missing from some dicts are averaged where present)."""
    keys = dict.fromkeys(k for item in history for k in item)
    return {k: float(np.mean([item[k] for item in history if k in item])) for k in keys}


class PerceptionTrainingCallback(BaseCallback):
    """Train the perception model on recorded frames during RL and push the weights into the running wrapper(s).

    At the first rollout end after every ``train_every`` env steps (summed over sub-envs) the callback takes
    ``gradient_steps`` AdamW steps on each part in ``parts`` — ``"tokenizer"`` (its VQ-VAE loss) and/or
    ``"context_model"`` (the predictor's loss, tokenizer frozen and in eval mode) — on windows sampled from the replay
    store. It trains its own copy of the wrapper's model (:attr:`model_copy`, on ``device``) with one optimizer per
    part that persists across updates, then loads the weights into every wrapper's model in place
    (``load_state_dict``), puts that model in eval mode and resets the wrapper's context stream
    (:func:`reset_context_stream`).

    **Caveats** (see the module docstring): the agent's observations become non-stationary, and in-flight episodes
    restart their context after each update. Off by default in the pipeline.

    Args:
        train_every: env steps between updates.
        gradient_steps: optimizer steps per part per update.
        parts: what to train, any of :data:`PERCEPTION_PARTS` (the tokenizer is always trained first).
        batch_size: windows per gradient step.
        sequence_length: frames per window (default: the model's ``video_shape[0]``); a context model with
            ``local_motion_history`` reads its ``motion_history_frames`` more before each window, as offline.
        num_context_frames: observed frames of a window for the context-model loss (default: half the window).
        lr, weight_decay, grad_clip: AdamW settings (constant learning rate; decay on ``ndim >= 2`` parameters;
            a submodule's ``lr_scale`` multiplies its rate, as offline; gradient-norm clipping, ``None`` or ``0`` for
            none). Steps with a non-finite loss or gradient are skipped.
        store: replay store or directory to sample from (default: the ``VecRecordFrames`` in the training env).
        context_envs: wrapper(s) to update (default: the ``VecContextObservation`` in the training env). Pass the
            training *and* evaluation wrappers to keep them on the same weights; they must hold models of the same
            architecture.
        recency: half-life in episodes for recency-weighted window sampling (``None``: uniform).
        device: where the copy trains (default: the wrapper model's device).
        seed: seeds batch sampling and the global torch RNG during updates (which is restored afterwards, so the
            agent's own random stream is unaffected).
        verbose: 1 prints a line per update.

    Logged with the SB3 logger after each update: ``perception/<part>/<loss>`` (means over the steps),
    ``perception/<part>/grad_norm``, ``perception/updates``, ``perception/skipped_steps``, ``perception/seconds``.
    An update is postponed (and retried at the next rollout end) while no recorded episode is long enough.
    """

    def __init__(
        self,
        train_every: int = 10_000,
        gradient_steps: int = 50,
        parts: Sequence[str] = ("context_model",),
        batch_size: int = 16,
        sequence_length: int | None = None,
        num_context_frames: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        grad_clip: float | None = 1.0,
        store: StoreLike | None = None,
        context_envs: VecContextObservation | Sequence[VecContextObservation] | None = None,
        recency: float | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.parts = self._check_parts(parts)
        check_positive(
            dict(train_every=train_every, gradient_steps=gradient_steps, batch_size=batch_size),
            "PerceptionTrainingCallback",
        )
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.train_every = int(train_every)
        self.gradient_steps = int(gradient_steps)
        self.batch_size = int(batch_size)
        self.sequence_length = sequence_length
        self.num_context_frames = num_context_frames
        self.lr, self.weight_decay, self.grad_clip = float(lr), float(weight_decay), grad_clip
        self.recency = recency
        self.seed = int(seed)
        self._store_arg = store
        self._context_envs_arg = context_envs
        self._device_arg = device
        self.store: ReplayStore | None = None
        self.context_envs: list[VecContextObservation] = []
        self.model_copy: CausalPerceiverIO | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.num_updates = 0
        self.skipped_steps = 0
        self._last_update_step = 0

    @classmethod
    def from_trainer_config(
        cls,
        config: TrainerConfig,
        train_every: int = 10_000,
        parts: Sequence[str] = ("context_model",),
        **kwargs,
    ) -> PerceptionTrainingCallback:
        """Settings from a :class:`TrainerConfig`: ``steps`` gradient steps per update, its batch size, window length,
        learning rate, weight decay, clipping, seed and device (warm-up, schedule and checkpoints do not apply)."""
        settings = dict(
            gradient_steps=config.steps,
            batch_size=config.batch_size,
            sequence_length=config.sequence_length,
            lr=config.lr,
            weight_decay=config.weight_decay,
            grad_clip=config.grad_clip,
            seed=config.seed,
            device=config.device,
        )
        return cls(train_every=train_every, parts=parts, **{**settings, **kwargs})

    @staticmethod
    def _check_parts(parts: Sequence[str]) -> tuple[str, ...]:
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        unknown = [p for p in parts if p not in PERCEPTION_PARTS]
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty subset of {PERCEPTION_PARTS}, got {parts}")
        return tuple(p for p in PERCEPTION_PARTS if p in parts)

    # -- setup ---------------------------------------------------------------------------------------------------

    def _init_callback(self) -> None:
        self.context_envs = find_context_envs(self.training_env, self._context_envs_arg)
        self.store = find_replay_store(self.training_env, self._store_arg)
        source = self.context_envs[0].model
        device = torch.device(self._device_arg) if self._device_arg is not None else device_of(source)
        self.model_copy = copy.deepcopy(source).to(device).requires_grad_(True).eval()
        self.sequence_length = self.sequence_length or int(source.config.video_shape[0])
        self.num_context_frames = self.num_context_frames or max(self.sequence_length // 2, 1)
        self._check_window()
        self.optimizers = {part: self._make_optimizer(part) for part in self.parts}
        self._last_update_step = self.model.num_timesteps

    def _check_window(self) -> None:
        step = self.model_copy.predictor.frames_per_token_step
        context, length = self.num_context_frames, self.sequence_length
        if context % step or context + step > length:
            raise ValueError(
                f"num_context_frames={context} must be a multiple of {step} and leave at least {step} frame(s) of "
                f"sequence_length={length} to predict"
            )

    def _make_optimizer(self, part: str) -> torch.optim.AdamW:
        """The offline trainer's AdamW (:func:`~aime_rl.training.optim.make_optimizer`): a submodule's ``lr_scale``
        (e.g. the local motion encoder's ``local_motion_lr_scale``) holds here too."""
        if part == "tokenizer":
            return make_optimizer(self.model_copy.tokenizer, self.lr, self.weight_decay)
        predictor = self.model_copy.predictor
        return make_optimizer(predictor, self.lr, self.weight_decay, predictor.trainable_parameters())

    def _window_length(self, part: str) -> int:
        """Frames of one training window of ``part``: ``sequence_length``, after the context model's
        :attr:`~aime_rl.perception.PerceiverTokenPredictor.motion_history_frames` (the offline trainer's windows)."""
        if part == "tokenizer":
            return self.sequence_length
        return self.sequence_length + self.model_copy.predictor.motion_history_frames

    # -- SB3 hooks -----------------------------------------------------------------------------------------------

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if is_due(self.num_timesteps, self._last_update_step, self.train_every):
            self.update()

    # -- one update ----------------------------------------------------------------------------------------------

    def update(self) -> dict[str, float] | None:
        """Train every part for ``gradient_steps`` steps, push the weights, log; returns the logged scalars.

        Returns ``None`` (and changes nothing) while no episode of the store holds a window of
        ``sequence_length`` frames.
        """
        if self.model_copy is None:
            raise RuntimeError("the callback is not initialised: pass it to agent.learn(callback=...) first")
        length = max(self._window_length(part) for part in self.parts)
        if not has_windows(self.store, length):
            if self.verbose:
                print(f"PerceptionTrainingCallback: no {length}-frame episode yet, update postponed")
            return None
        start = time.perf_counter()
        scalars: dict[str, float] = {}
        with isolated_rng(self.seed + self.num_updates, device_of(self.model_copy)):
            for index, part in enumerate(self.parts):
                rng = np.random.default_rng([self.seed, self.num_updates, index])
                metrics = self._train_part(part, rng)
                scalars.update({f"perception/{part}/{k}": v for k, v in metrics.items()})
        self.push_weights()
        self.num_updates += 1
        self._last_update_step = self.num_timesteps
        scalars.update(
            {
                "perception/updates": float(self.num_updates),
                "perception/skipped_steps": float(self.skipped_steps),
                "perception/seconds": time.perf_counter() - start,
            }
        )
        self._log(scalars)
        return scalars

    def _loss_fn(self, part: str) -> tuple[nn.Module, Callable[[nn.Module, Mapping], Mapping[str, Any]]]:
        if part == "tokenizer":
            return self.model_copy.tokenizer, tokenizer_loss
        predictor = self.model_copy.predictor
        return predictor, predictor_loss_fn(self.num_context_frames, predictor.motion_history_frames)

    @contextmanager
    def _training_mode(self, part: str) -> Iterator[None]:
        """Train mode for ``part``; for the context model, the tokenizer stays frozen in eval mode."""
        model = self.model_copy
        model.train()
        try:
            if part == "context_model":
                model.tokenizer.eval()  # no EMA codebook updates: the codes must keep their meaning
                with _frozen(model.tokenizer):
                    yield
            else:
                yield
        finally:
            model.eval()

    def _train_part(self, part: str, rng: np.random.Generator) -> dict[str, float]:
        """``gradient_steps`` optimizer steps on ``part``; returns the mean scalars of the steps."""
        module, loss_fn = self._loss_fn(part)
        optimizer = self.optimizers[part]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        device = device_of(self.model_copy)
        history = []
        with self._training_mode(part):
            for _ in range(self.gradient_steps):
                frames = sample_frames(
                    self.store,
                    self.batch_size,
                    self._window_length(part),
                    rng,
                    self.recency,
                    self.model_copy.frame_size,
                    device,
                )
                history.append(self._gradient_step(module, loss_fn, optimizer, params, frames))
        return _mean_metrics(history)

    def _gradient_step(self, module, loss_fn, optimizer, params, frames: torch.Tensor) -> dict[str, float]:
        """One AdamW step on ``loss_fn(module, {"frames": frames})["total"]`` (skipped when non-finite)."""
        losses = dict(loss_fn(module, {"frames": frames}))
        optimizer.zero_grad(set_to_none=True)
        self.model_copy.zero_grad(set_to_none=True)  # also drops gradients that reached frozen modules
        losses["total"].backward()
        max_norm = self.grad_clip if self.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if torch.isfinite(losses["total"].detach()) and torch.isfinite(grad_norm):
            optimizer.step()
        else:
            self.skipped_steps += 1
            optimizer.zero_grad(set_to_none=True)
        return scalar_metrics({**losses, "grad_norm": grad_norm})

    def push_weights(self) -> None:
        """Copy :attr:`model_copy`'s weights into every wrapper's model, put it in eval mode, reset its stream."""
        state = self.model_copy.state_dict()
        for env in self.context_envs:
            with torch.inference_mode():  # in place; also valid for tensors created under inference mode
                env.model.load_state_dict(state)
            env.model.eval()
            reset_context_stream(env)

    def _log(self, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self.logger.record(name, value)
        if self.verbose:
            losses = ", ".join(f"{p} {scalars[f'perception/{p}/total']:.4g}" for p in self.parts)
            print(
                f"PerceptionTrainingCallback: update {self.num_updates} at step {self.num_timesteps}: {losses}"
            )
