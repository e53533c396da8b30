"""Moving-sprite videos: coloured squares gliding and bouncing over a smooth coloured background.

Motion is constant-velocity with reflection at the borders, so the next frame is predictable from the last two —
a small, learnable stand-in for game frames.
"""

from __future__ import annotations

import torch


def moving_sprites(
    batch_size: int,
    num_frames: int,
    size: int = 64,
    num_sprites: int = 2,
    sprite_size: int | None = None,
    max_speed: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate videos ``[B, T, 3, size, size]`` float in ``[0, 1]``.

    Each video has a random linear colour gradient as background and ``num_sprites`` squares of side
    ``sprite_size`` (default ``size // 6``) with random colours, positions and velocities (pixels per frame, up
    to ``max_speed``) that bounce off the borders.
    """
    g = generator
    side = sprite_size or max(size // 6, 2)
    video = _backgrounds(batch_size, size, g).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    pos = torch.rand(batch_size, num_sprites, 2, generator=g) * (size - side)
    vel = (torch.rand(batch_size, num_sprites, 2, generator=g) * 2 - 1) * max_speed
    colours = torch.rand(batch_size, num_sprites, 3, generator=g)
    for t in range(num_frames):
        for b in range(batch_size):
            for s in range(num_sprites):
                y, x = pos[b, s].round().long().tolist()
                video[b, t, :, y : y + side, x : x + side] = colours[b, s].view(3, 1, 1)
        pos, vel = _bounce(pos + vel, vel, size - side)
    return video


def _backgrounds(batch_size: int, size: int, g: torch.Generator | None) -> torch.Tensor:
    """Linear colour gradients ``[B, 3, size, size]`` between two random dim colours."""
    start = torch.rand(batch_size, 3, 1, 1, generator=g) * 0.5
    end = torch.rand(batch_size, 3, 1, 1, generator=g) * 0.5
    angle = torch.rand(batch_size, 1, 1, 1, generator=g) * 2 * torch.pi
    coords = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ramp = torch.cos(angle) * xx + torch.sin(angle) * yy
    low, high = ramp.amin((-2, -1), keepdim=True), ramp.amax((-2, -1), keepdim=True)
    ramp = (ramp - low) / (high - low + 1e-6)
    return start + (end - start) * ramp


def _bounce(pos: torch.Tensor, vel: torch.Tensor, limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflect positions that left ``[0, limit]`` and flip their velocity."""
    low, high = pos < 0, pos > limit
    pos = torch.where(low, -pos, torch.where(high, 2 * limit - pos, pos))
    vel = torch.where(low | high, -vel, vel)
    return pos.clamp(0, limit), vel
