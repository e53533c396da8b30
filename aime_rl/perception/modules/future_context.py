"""FutureContextHead: the self-predictive term's map from a frame's context to the context k frames later.

A small MLP shared by every k, told k by a learned embedding added to its input (as SPR's transition model is told
the action). The term it serves (``PredictorConfig.future_context_weight``) compares its output with the model's
own later contexts, standardised and without gradient, so the context of frame t must carry what decides the
next frames: where things are and how they move.
"""

from __future__ import annotations

import torch
from torch import nn


class FutureContextHead(nn.Module):
    """Context ``[..., D]`` and a step k in ``1 … max_steps`` → the predicted context k frames on ``[..., D]``.

    Args:
        channels: D.
        max_steps: the largest k.
    """

    def __init__(self, channels: int, max_steps: int):
        super().__init__()
        self.step_embedding = nn.Parameter(torch.randn(max_steps, channels) * 0.02)
        self.mlp = nn.Sequential(
            nn.LayerNorm(channels),
            nn.Linear(channels, 2 * channels),
            nn.GELU(),
            nn.Linear(2 * channels, channels),
        )

    @property
    def max_steps(self) -> int:
        return self.step_embedding.shape[0]

    def forward(self, context: torch.Tensor, step: int) -> torch.Tensor:
        """``[..., D]``, k → ``[..., D]``; ``ValueError`` for k outside ``1 … max_steps``."""
        if not 1 <= step <= self.max_steps:
            raise ValueError(f"step must be in [1, {self.max_steps}], got {step}")
        return self.mlp(context + self.step_embedding[step - 1])
