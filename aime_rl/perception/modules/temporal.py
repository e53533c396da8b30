"""Time structure of the Perceiver's inputs and outputs: change marks of token steps and multi-timescale summaries.

- :func:`change_marks`: whether each token cell's tokens changed since the previous token step (the predictor's
  optional ``mark_changes`` input embedding).
- :func:`motion_marks`: whether each token cell's pixels changed since the previous frame (the predictor's
  ``motion_attention_bias``).
- :func:`pixel_changes`: how each token cell's pixels changed since the previous frame (the predictor's
  ``pixel_changes`` input embedding).
- :func:`cell_patches`: each token cell's pixels (what ``local_motion_inputs="pixels"`` reads).
- :class:`TimescaleSummary` and :data:`TIMESCALES`: causal "medium"/"slow" summaries of the per-frame contexts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import CrossAttentionLayer
from .kv_cache import window_mask

TIMESCALES: dict[str, int | None] = {"fast": None, "medium": 4, "slow": 16}


def check_timescale(timescale: str) -> None:
    if timescale not in TIMESCALES:
        raise ValueError(f"timescale must be one of {list(TIMESCALES)}, got {timescale!r}")


#: Change marks of the encoder's input tokens: the cell's tokens (``mark_changes``) or pixels
#: (``motion_attention_bias``) equal the previous step's, differ from them, or there is no previous step (the first
#: frame of an episode or of a training clip).
UNCHANGED, CHANGED, FIRST = 0, 1, 2


def change_marks(tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens ``[B, T', h, w, G]`` → marks ``[B, T', h, w]`` (int64: ``UNCHANGED``/``CHANGED``/``FIRST``).

    Step k is compared with step k − 1 (all G heads); step 0 with ``previous`` (``[B, h, w, G]``, the step before
    the sequence) when given, else it is ``FIRST``.
    """
    same = (tokens[:, 1:] == tokens[:, :-1]).all(-1)
    if previous is None:
        first = torch.full_like(tokens[:, :1, ..., 0], FIRST)
    else:
        first = torch.where((tokens[:, 0] == previous).all(-1), UNCHANGED, CHANGED).unsqueeze(1)
    return torch.cat([first, torch.where(same, UNCHANGED, CHANGED)], dim=1)


def motion_marks(
    video: torch.Tensor, grid: tuple[int, int], threshold: float, previous: torch.Tensor | None = None
) -> torch.Tensor:
    """Frames ``[B, T, C, H, W]`` (float in [0, 1]) → marks ``[B, T, h, w]`` on the token ``grid`` ``(h, w)``:
    ``CHANGED`` where some pixel of the cell differs by more than ``threshold`` (any channel) from the frame before,
    ``UNCHANGED`` elsewhere. Frame 0 is compared with ``previous`` (``[B, C, H, W]``) when given, else ``FIRST``.

    Read from the pixels, not the tokens: a tokenizer's tokens flip in cells where nothing moved and keep their ids
    where a small object did move (measured on Catch at 4×4 tokens: 48 % of the static cells and 65 % of the moving
    ones changed some head's token), so token changes are a noisy sign of motion at small budgets.
    """
    frames = video if previous is None else torch.cat([previous.unsqueeze(1), video], dim=1)
    change = (frames[:, 1:] - frames[:, :-1]).abs().amax(dim=2)  # [B, T or T - 1, H, W]
    moved = F.adaptive_max_pool2d(change.flatten(0, 1), grid).unflatten(0, change.shape[:2]) > threshold
    marks = torch.where(moved, CHANGED, UNCHANGED)
    if previous is None:
        first = torch.full((video.shape[0], 1, *grid), FIRST, dtype=marks.dtype, device=marks.device)
        marks = torch.cat([first, marks], dim=1)
    return marks


def pixel_changes(
    video: torch.Tensor, grid: tuple[int, int], previous: torch.Tensor | None = None
) -> torch.Tensor:
    """Frames ``[B, T, C, H, W]`` (float in [0, 1]) → each token cell's signed pixel change since the frame before,
    ``[B, T, h, w, C · H/h · W/w]`` (the cell's difference patch, channels then rows then columns).

    Frame 0 is compared with ``previous`` (``[B, C, H, W]``) when given, else its change is zero (an episode's first
    frame: nothing has moved yet). A linear map of a cell's difference patch can read how far a small object moved
    inside it: the first moment of the patch, ``Σ position · change``, is the object's displacement times its mass.
    """
    h, w = grid
    before = torch.zeros_like(video[:, :1]) if previous is None else previous.unsqueeze(1)
    difference = video - torch.cat([before, video[:, :-1]], dim=1)
    if previous is None:
        difference[:, 0] = 0
    return cell_patches(difference, grid)


def cell_patches(video: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Frames ``[..., C, H, W]`` → each token cell's patch ``[..., h, w, C · H/h · W/w]`` on the token ``grid``
    ``(h, w)`` (channels, then rows, then columns)."""
    h, w = grid
    return rearrange(video, "... c (h ph) (w pw) -> ... h w (c ph pw)", h=h, w=w)


class TimescaleSummary(nn.Module):
    """A causal summary of the last ``span`` frame contexts: ``[B, T, D] → [B, T, D]``.

    The query at frame t (a learned vector plus the frame's own context) attends to the contexts of frames
    ``t − span + 1 … t`` (rotary time positions), giving the hierarchical "medium"/"slow" latents.
    """

    def __init__(self, channels: int, num_heads: int, widening_factor: int, dropout: float, span: int):
        super().__init__()
        self.span = span
        self.query = nn.Parameter(torch.randn(channels) * 0.02)
        self.attention = CrossAttentionLayer(
            channels, channels, num_heads, widening_factor, dropout, rotary_time=True, null_kv=True
        )
        self.norm = nn.LayerNorm(channels)

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        """Frame contexts ``[B, T, D]`` → summaries ``[B, T, D]``."""
        time = torch.arange(fast.shape[1], device=fast.device)
        mask = window_mask(time, time, self.span).unsqueeze(0)
        out = self.attention(fast + self.query, fast, mask, q_time=time, k_time=time)
        return self.norm(out)

    def step(self, fast: torch.Tensor, keys, values, key_time, visible) -> torch.Tensor:
        """Current context ``[B, D]`` over cached keys/values of recent contexts → summary ``[B, D]``."""
        q = (fast + self.query).unsqueeze(1)
        zero = torch.zeros(1, device=fast.device)
        out = self.attention.attend(q, keys, values, visible.unsqueeze(1), q_time=zero, k_time=key_time)
        return self.norm(out.squeeze(1))
