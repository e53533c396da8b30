"""``PerceptionFeaturesExtractor``: the perception model inside the policy, fine-tuned jointly with it.

The default (and recommended) setup keeps the perception model frozen in the env wrapper
(:class:`aime_rl.wrappers.ContextObservation` / ``VecContextObservation``): contexts are computed once per env step,
batched, without gradients, and the policy is a plain MLP. This extractor is the other option: the policy observes
a window of the last ``k`` raw frames (``VecFrameStack(venv, k)`` over a pixel env) and computes the context of the
newest frame with ``extract_context`` over that window, with gradients, so the RL loss fine-tunes the model.

Trade-offs:

- the features move under the policy: the value function and the policy chase a changing representation, and a
  large learning rate can wreck a pretrained model (use a small one, or few trainable layers);
- every update re-encodes ``k`` frames per sample (much slower than the wrapper, which encodes each frame once);
- the context only sees the ``k`` stacked frames, not the whole episode history as the wrapper's stream does.

Two SB3 behaviours must be neutralised, and are:

- PPO/A2C ``ortho_init=True`` re-initialises every ``Linear`` inside the features extractor (it would erase the
  pretrained weights): :func:`perception_policy_kwargs` sets ``ortho_init=False``;
- ``policy.set_training_mode(True)`` calls ``train(True)`` on every module, which would turn on the perception
  model's Dropout and the tokenizer's training-only behaviour: :meth:`PerceptionFeaturesExtractor.train` keeps the
  perception model in eval mode unless ``train_perception_mode=True``. Gradients flow either way.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers.preprocessing import load_perception_model

__all__ = ["PerceptionFeaturesExtractor", "perception_policy_kwargs"]


class PerceptionFeaturesExtractor(BaseFeaturesExtractor):
    """Stacked frames → context of the newest frame, ``[B, context_dim]``, with gradients into the model.

    Args:
        observation_space: uint8 ``Box`` of ``k`` stacked RGB frames, channels-first ``[3k, H, W]`` (what SB3's
            ``VecTransposeImage`` gives) or channels-last ``[H, W, 3k]`` (``VecFrameStack`` over ``[H, W, 3]``);
            frames ordered oldest to newest.
        model_or_dir: a ``CausalPerceiverIO`` or a checkpoint directory (prefer a directory: SB3 pickles these
            kwargs into the saved agent, and ``PPO.load`` then rebuilds the model and loads the fine-tuned weights).
        window: attention window of ``extract_context`` (None: all ``k`` frames).
        train_perception_mode: let ``train(True)`` put the perception model in training mode too (Dropout on).
        trainable: False freezes the model's parameters (then prefer the env wrappers, which are much faster). A
            model built with ``frozen_embeddings`` keeps its input adapter frozen either way.

    ``forward`` takes observations as SB3 preprocesses them: float in ``[0, 1]`` (``normalize_images=True``).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        model_or_dir: CausalPerceiverIO | str | os.PathLike,
        window: int | None = None,
        train_perception_mode: bool = False,
        trainable: bool = True,
    ):
        model = load_perception_model(model_or_dir)
        super().__init__(observation_space, features_dim=model.context_dim)
        self.channels_first = self._check_space(observation_space)
        channels = observation_space.shape[0] if self.channels_first else observation_space.shape[-1]
        self.num_frames = channels // 3
        self.perception = model
        self.window = window
        self.train_perception_mode = train_perception_mode
        self.perception.requires_grad_(trainable)
        if model.predictor.config.frozen_embeddings:  # stays as drawn in every training (PredictorConfig)
            model.predictor.input_adapter.requires_grad_(False)
        self.train(False)

    @staticmethod
    def _check_space(observation_space: spaces.Space) -> bool:
        """True for channels-first; raises ``ValueError`` unless it is a uint8 stack of RGB frames."""
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                "PerceptionFeaturesExtractor needs stacked RGB frames, a Box [3k, H, W] or [H, W, 3k], "
                f"got {observation_space}"
            )
        channels_first = is_image_space_channels_first(observation_space)
        channels = observation_space.shape[0] if channels_first else observation_space.shape[-1]
        if channels % 3:
            raise ValueError(
                f"stacked frames must have 3k channels (RGB), got shape {observation_space.shape}"
            )
        return channels_first

    def train(self, mode: bool = True) -> PerceptionFeaturesExtractor:
        """Like ``nn.Module.train``, but the perception model only trains if ``train_perception_mode``."""
        super().train(mode)
        self.perception.train(mode and self.train_perception_mode)
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``[B, 3k, H, W]`` (or ``[B, H, W, 3k]``) float in [0, 1] → context of the last frame ``[B, D]``."""
        if not self.channels_first:
            observations = observations.permute(0, 3, 1, 2)
        batch, _, height, width = observations.shape
        frames = observations.reshape(batch * self.num_frames, 3, height, width)
        if (height, width) != tuple(self.perception.frame_size):
            frames = F.interpolate(frames, size=self.perception.frame_size, mode="bilinear", antialias=True)
        video = frames.reshape(batch, self.num_frames, 3, *frames.shape[-2:]).clamp(0, 1)
        return self.perception.extract_context(video, window=self.window)[:, -1]


def perception_policy_kwargs(
    model_or_dir: CausalPerceiverIO | str | os.PathLike,
    algo: str = "ppo",
    window: int | None = None,
    train_perception_mode: bool = False,
    **policy_kwargs: Any,
) -> dict[str, Any]:
    """``policy_kwargs`` for an SB3 agent whose features extractor is the perception model.

    Sets ``ortho_init=False`` for PPO/A2C (so the pretrained weights survive the policy's construction);
    ``policy_kwargs`` (e.g. ``net_arch``) are added.
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        model_or_dir = os.fspath(model_or_dir)
    kwargs: dict[str, Any] = dict(
        features_extractor_class=PerceptionFeaturesExtractor,
        features_extractor_kwargs=dict(
            model_or_dir=model_or_dir, window=window, train_perception_mode=train_perception_mode
        ),
    )
    if algo.lower() in ("ppo", "a2c"):
        kwargs["ortho_init"] = False
    return {**kwargs, **policy_kwargs}
