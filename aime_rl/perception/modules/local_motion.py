"""LocalMotionEncoder: each token cell's motion, from its neighbourhood over the last few token steps.

The Perceiver's latents read the tokens through attention: a weighted average of value vectors that do not say how
old they are, so a sprite seen at two places in two frames reads as their blend, and a velocity must be assembled
from two cells' code identities by attention heads that pick the two frames apart. At the demo's budget it never
is (Catch: the context model's predicted next frame keeps the ball where it was; the displacement it predicts
correlates 0.17–0.27 with the true one). A small convolution over the code embeddings of the last ``k`` token steps
stacked as channels learns the same prediction from the same tokens quickly (this module trained alone for 400
steps: correlation 0.90), because each cell sees which frame each neighbour's code is from.

This module is that convolution. Its features at cell (i, j) of step s are added to that cell's key input, and
are trained by their own head to name the tokens of step s + 1 in the cell's whole 3×3 neighbourhood (the model's
``local_motion_weight`` term): a moving object's next place is then a property of the cell it is in now — the one
the motion bonus marks and the latents read — not only of the cell it will enter, which nothing marks. They learn
the motion over a short gradient path, and the latents read it from one key (Catch, three models at the demo's
budget: ball vx R² 0.537 → 0.63–0.67 and the landing column's R² 0.332 → 0.37–0.40, where a head that names the
cell's own next tokens only reached 0.608 and 0.268). Causal: step s sees steps s − k + 1 … s only.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .temporal import cell_patches

#: Channels each token step's embedding is projected to before the steps are stacked.
FRAME_CHANNELS = 32
#: Channels of the convolution's hidden and output features.
HIDDEN_CHANNELS = 64
#: Cells of a 3×3 neighbourhood, whose next tokens each cell's features are trained to name.
NEIGHBOURS = 9
#: What a local motion encoder reads of each cell (``PredictorConfig.local_motion_inputs``): its code embeddings, or
#: its pixels.
LOCAL_MOTION_INPUTS = ("codes", "pixels")


def neighbourhoods(tokens: torch.Tensor, fill: int = -1) -> torch.Tensor:
    """Tokens ``[..., h, w, G]`` → each cell's 3×3 neighbourhood ``[..., h, w, 9, G]`` (row-major, the cell itself
    at index 4); ``fill`` outside the grid."""
    lead, (h, w, g) = tokens.shape[:-3], tokens.shape[-3:]
    grid = rearrange(tokens, "... h w g -> (...) g h w")
    padded = F.pad(grid, (1, 1, 1, 1), value=fill)
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # [n, G, h, w, 3, 3]
    cells = rearrange(windows, "n g h w i j -> n h w (i j) g")
    return cells.reshape(*lead, h, w, NEIGHBOURS, g)


@functools.lru_cache(maxsize=32)
def inside_neighbours(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Flat indices ``[M]`` into an ``[h, w, 9]`` grid of neighbourhoods (see :func:`neighbourhoods`) of the
    neighbours inside the grid. Built once per grid and device: they depend on the grid alone."""
    cells = torch.arange(height * width).view(height, width, 1)
    return (neighbourhoods(cells)[..., 0] >= 0).flatten().nonzero().squeeze(1).to(device)


def history_known(steps: int, frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Which of each step's last ``frames`` steps (newest first) lie inside a clip of ``steps``: bool ``[steps,
    frames]``."""
    back = torch.arange(frames, device=device)
    return torch.arange(steps, device=device).unsqueeze(1) - back >= 0


def step_history(tokens: torch.Tensor, frames: int, fill: int) -> torch.Tensor:
    """Tokens ``[B, T', h, w, G]`` → each step with the ``frames − 1`` steps before it, newest first: ``[B, T',
    frames, h, w, G]``. Steps before the clip's first are ``fill`` (the mask id: an episode's first frame has no
    history, and "unknown" is not "nothing moved"; the stream does the same). Any per-cell values ``[B, T', h, w,
    X]`` work the same way."""
    steps = tokens.shape[1]
    back = torch.arange(frames, device=tokens.device)
    index = torch.arange(steps, device=tokens.device).unsqueeze(1) - back  # [T', frames]
    history = tokens[:, index.clamp_min(0)]
    known = history_known(steps, frames, tokens.device)
    return history.masked_fill(~known.view(1, steps, frames, 1, 1, 1), fill)


def pixel_motion_cells(frames: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Frames ``[..., C, H, W]`` (float in [0, 1]) → what a pixel :class:`LocalMotionEncoder` keeps of each cell:
    its patch less the frame's mean colour, ``[..., h, w, C · H/h · W/w]`` on the token ``grid``.

    Centred on the frame's own mean, a plain background reads as zero and a small object as what sets it apart.
    Centred on 0.5 instead, every input of a dark screen starts near −1 and the convolution learns little at a
    short budget (Catch, the encoder trained alone for 320 steps: ball vy 0.06 from its features, against 0.57)."""
    return cell_patches(frames - frames.mean(dim=(-2, -1), keepdim=True), grid)


def pixel_motion_inputs(cells: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Cells of :func:`pixel_motion_cells` ``[..., k, h, w, P]`` and which of the k steps are known ``[..., k]``
    (bool; False before an episode's first frame) → the inputs of a pixel :class:`LocalMotionEncoder` ``[..., k,
    h, w, P + 1]``: the cells (zero where unknown) and a known flag, so "unknown" is not "the mean colour"."""
    flag = known[..., None, None, None].to(cells.dtype).expand(*cells.shape[:-1], 1)
    return torch.cat([cells * flag, flag], dim=-1)


class LocalMotionEncoder(nn.Module):
    """A cell's 3×3 neighbourhood over ``frames`` token steps → motion features per cell.

    What it reads of each cell and step is ``input_channels`` wide: the cell's code embedding (``normalize``: a
    LayerNorm first), or its pixels (:func:`pixel_motion_inputs`).

    Args:
        input_channels: width of a cell's input per step (the model's code embedding width ``D``, or a cell
            patch's ``C · p · p`` plus its known flag).
        frames: ``k``, the token steps seen (this one and ``k − 1`` before).
        normalize: LayerNorm each input first (for code embeddings, whose entries start at 0.02).
    """

    def __init__(self, input_channels: int, frames: int, normalize: bool = True):
        super().__init__()
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
            raise ValueError(f"local_motion_frames must be 0 (off) or an int >= 2, got {frames!r}")
        self.frames = frames
        # the code embeddings start at 0.02 per entry: normalised, the convolution sees them at unit scale from the
        # first step instead of waiting for them to grow (pixels are at that scale already)
        self.norm = nn.LayerNorm(input_channels) if normalize else nn.Identity()
        self.frame_proj = nn.Linear(input_channels, FRAME_CHANNELS)
        self.convs = nn.Sequential(
            nn.Conv2d(frames * FRAME_CHANNELS, HIDDEN_CHANNELS, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(HIDDEN_CHANNELS, HIDDEN_CHANNELS, 3, padding=1),
            nn.GELU(),
        )

    @property
    def out_channels(self) -> int:
        return HIDDEN_CHANNELS

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        """Inputs ``[..., k, h, w, input_channels]`` (newest step first, see :func:`step_history`) → features
        ``[..., h, w, C]`` (``C = out_channels``) of the newest step."""
        lead = embedded.shape[:-4]
        x = rearrange(self.frame_proj(self.norm(embedded)), "... k h w c -> (...) (k c) h w")
        features = rearrange(self.convs(x), "n c h w -> n h w c")
        return features.reshape(*lead, *features.shape[1:])
