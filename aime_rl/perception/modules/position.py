"""Position encodings for the Perceiver blocks: rotary (1D and 2D grid), Fourier features, learned tables.

Rotary convention ("rotate half", the GPT-NeoX / LLaMA layout)
---------------------------------------------------------------
For a vector of ``dim`` channels (``dim`` even, ``half = dim // 2``), channel ``i`` and channel ``i + half`` form
a pair that is rotated, as a point in the plane, by the angle ``position * inv_freq[i]`` with
``inv_freq[i] = base ** (-2 i / dim)``:

    out[i]        = x[i] * cos(a_i) - x[i + half] * sin(a_i)
    out[i + half] = x[i + half] * cos(a_i) + x[i] * sin(a_i)

Rotating queries at position ``p`` and keys at ``p'`` makes ``q . k`` a function of ``p - p'`` only; positions
may be negative or fractional (e.g. a key's age relative to the query frame). Angles are computed in float32
(float64 when ``x`` is float64) and the result is cast back to ``x``'s dtype.

Fourier features follow the Perceiver: each axis is normalised to ``[-1, 1]`` and encoded by ``sin``/``cos`` of
``pi * f * x`` for ``num_bands`` frequencies ``f`` in ``linspace(1, max_freq / 2, num_bands)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "FourierPositionEncoding",
    "GridRotaryEmbedding",
    "LearnedPositionEncoding",
    "RotaryEmbedding",
    "apply_rotary",
    "fourier_channels",
    "fourier_position_encoding",
    "cell_centres",
    "grid_positions",
    "latent_homes",
    "rotary_inverse_frequencies",
]


# ----------------------------------------------------------------------------------------------------------------
# Rotary embeddings
# ----------------------------------------------------------------------------------------------------------------


def rotary_inverse_frequencies(
    dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """Inverse frequencies ``base ** (-2 i / dim)`` for ``i = 0 .. dim/2 - 1``: shape ``[dim // 2]``.

    Computed in float64 and cast to ``dtype``.
    """
    _check_rotary_dim(dim, "dim")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim
    return (float(base) ** -exponents).to(dtype)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(i, i + dim/2)`` of ``x`` by ``angles`` ("rotate half" convention).

    Args:
        x: ``[..., dim]`` float tensor, ``dim`` even.
        angles: ``[..., dim // 2]`` float32/float64 angles in radians, broadcastable against ``x[..., :dim//2]``.

    Returns:
        Rotated tensor of ``x``'s shape and dtype; the arithmetic runs in ``angles``' dtype.
    """
    half = x.shape[-1] // 2
    cos, sin = angles.cos(), angles.sin()
    x_compute = x.to(angles.dtype)
    first, second = x_compute[..., :half], x_compute[..., half:]
    rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    return rotated.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) over the last dimension, "rotate half" convention.

    Has no parameters; the inverse frequencies ``[dim // 2]`` are a non-persistent buffer (not in state dicts).

    Args:
        dim: number of rotated channels (even), usually the attention head dimension.
        base: frequency base; larger bases give longer wavelengths.
    """

    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        _check_rotary_dim(dim, "dim")
        if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0):
            raise ValueError(f"base must be a positive finite number, got {base!r}")
        self.dim = dim
        self.base = float(base)
        self.register_buffer(
            "inv_freq", rotary_inverse_frequencies(dim, self.base, torch.float32), persistent=False
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}"

    def angles(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rotation angles ``positions[..., None] * inv_freq``: ``[..., L]`` -> ``[..., L, dim // 2]`` in ``dtype``.

        ``dtype`` must be float32 or float64. The angles live on ``positions``' device.
        """
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        _check_positions_tensor(positions, "positions")
        return positions.to(dtype).unsqueeze(-1) * self._inverse_frequencies(dtype, positions.device)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` by its positions.

        Args:
            x: ``[..., L, dim]`` float tensor, typically ``[B, heads, L, head_dim]``.
            positions: ``[L]`` or broadcastable ``[..., L]`` (e.g. ``[B, 1, L]``), int or float, may be negative.

        Returns:
            ``[..., L, dim]`` in ``x``'s dtype. Position 0 is the identity; the norm of each vector is preserved.
        """
        return self._rotate(x, positions, "positions")

    def rotate_partial(
        self, x: torch.Tensor, positions: torch.Tensor, rotate_dim: int | None = None
    ) -> torch.Tensor:
        """Rotate only the first ``rotate_dim`` channels of ``x`` and pass the rest through unchanged.

        Args:
            x: ``[..., L, C]`` with ``C >= rotate_dim``.
            positions: as in :meth:`rotate`.
            rotate_dim: number of leading channels to rotate; defaults to, and must equal, this module's ``dim``
                (the frequencies belong to ``dim``; build ``RotaryEmbedding(rotate_dim)`` for another size).

        Returns:
            ``[..., L, C]``: ``cat(rotate(x[..., :rotate_dim]), x[..., rotate_dim:])``.
        """
        rotate_dim = self.dim if rotate_dim is None else rotate_dim
        if rotate_dim != self.dim:
            raise ValueError(
                f"rotate_dim must equal this RotaryEmbedding's dim={self.dim}, got {rotate_dim}; "
                f"build RotaryEmbedding({rotate_dim}) to rotate {rotate_dim} channels"
            )
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] < rotate_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [..., L, C] with C >= rotate_dim={rotate_dim}, got {shape}")
        head, tail = x[..., :rotate_dim], x[..., rotate_dim:]
        return torch.cat((self.rotate(head, positions), tail), dim=-1)

    def _rotate(self, x: torch.Tensor, positions: torch.Tensor, positions_name: str) -> torch.Tensor:
        _check_rotary_input(x, self.dim, "x")
        _check_positions_tensor(positions, positions_name)
        angles = self.angles(positions.to(x.device), _compute_dtype(x))
        _check_positions_broadcast(angles, x, self.dim // 2, positions_name)
        return apply_rotary(x, angles)

    def _inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``inv_freq`` in ``dtype``; recomputed when the buffer was cast to lower precision (``.half()``)."""
        if self.inv_freq.dtype == dtype or (self.inv_freq.dtype == torch.float64 and dtype == torch.float32):
            return self.inv_freq.to(device=device, dtype=dtype)
        return rotary_inverse_frequencies(self.dim, self.base, dtype, device)


def grid_positions(
    height: int, width: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of a ``height x width`` token grid in row-major order.

    Returns:
        ``(rows, cols)``, each int64 ``[height * width]``; token ``k`` sits at ``(k // width, k % width)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"grid height and width must be positive, got {height}x{width}")
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return rows, cols


def cell_centres(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Centres of a ``height x width`` token grid's cells in ``[−1, 1]²`` (row, column), row-major: ``[h · w, 2]``."""
    rows, cols = grid_positions(height, width, device)
    return torch.stack([(2 * rows + 1) / height - 1, (2 * cols + 1) / width - 1], dim=-1)


def latent_homes(num_latents: int) -> torch.Tensor:
    """Starting homes of ``num_latents`` latents on the token grid, ``[N, 2]`` in ``[−1, 1]²`` (row, column): the
    centres of a ``ceil(√N) x ceil(√N)`` grid, row-major, the first N of them."""
    side = math.ceil(math.sqrt(num_latents))
    return cell_centres(side, side)[:num_latents].float()


class GridRotaryEmbedding(nn.Module):
    """2D rotary embedding for a token grid: first ``dim/2`` channels rotated by row, last ``dim/2`` by column.

    Each half uses the 1D "rotate half" convention of :class:`RotaryEmbedding` with ``dim / 2`` channels, so
    ``q . k`` depends only on ``(row_q - row_k, col_q - col_k)``.

    Args:
        dim: channels per vector, divisible by 4.
        base: frequency base shared by both axes.
    """

    grid_positions = staticmethod(grid_positions)

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim <= 0 or dim % 4:
            raise ValueError(f"dim must be a positive multiple of 4 for 2D rotary embedding, got {dim!r}")
        self.dim = dim
        self.row_rotary = RotaryEmbedding(dim // 2, base)
        self.col_rotary = RotaryEmbedding(dim // 2, base)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.row_rotary.base:g}"

    def rotate(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[..., L, dim]`` by row indices and column indices (each ``[L]`` or broadcastable)."""
        _check_rotary_input(x, self.dim, "x")
        half = self.dim // 2
        row_part = self.row_rotary._rotate(x[..., :half], rows, "rows")
        col_part = self.col_rotary._rotate(x[..., half:], cols, "cols")
        return torch.cat((row_part, col_part), dim=-1)


def _check_rotary_dim(dim: int, name: str) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0 or dim % 2:
        raise ValueError(f"{name} must be a positive even integer for rotary embedding, got {dim!r}")


def _check_rotary_input(x: torch.Tensor, dim: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [..., L, {dim}], got {type(x).__name__}")
    if x.dim() < 2 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape [..., L, {dim}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_positions_tensor(positions: torch.Tensor, name: str) -> None:
    if not isinstance(positions, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [L] or [..., L], got {type(positions).__name__}")
    if positions.dim() == 0:
        raise ValueError(f"{name} must have shape [L] or [..., L], got a scalar")
    if positions.dtype == torch.bool or positions.is_complex():
        raise ValueError(f"{name} must be an integer or real floating tensor, got dtype {positions.dtype}")


def _check_positions_broadcast(angles: torch.Tensor, x: torch.Tensor, half: int, name: str) -> None:
    """The angles ``[..., L, half]`` must broadcast onto ``x[..., :half]`` without enlarging it."""
    target = (*x.shape[:-1], half)
    try:
        broadcast = torch.broadcast_shapes(angles.shape, target)
    except RuntimeError:
        broadcast = None
    if broadcast != torch.Size(target):
        raise ValueError(
            f"{name} with shape {tuple(angles.shape[:-1])} does not broadcast to x's positions "
            f"{tuple(x.shape[:-1])} (expected [L] or [..., L] with L={x.shape[-2]})"
        )


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Fourier features (Perceiver) and learned tables
# ----------------------------------------------------------------------------------------------------------------


def fourier_channels(ndim: int, num_bands: int, include_positions: bool = True) -> int:
    """Channels of :func:`fourier_position_encoding`: ``ndim * (2 * num_bands + include_positions)``."""
    return ndim * (2 * num_bands + int(include_positions))


def fourier_position_encoding(
    shape: tuple[int, ...],
    num_bands: int,
    max_freq: float | Sequence[float] | None = None,
    include_positions: bool = True,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Perceiver Fourier position features for every point of a grid of ``shape``.

    Positions along each axis are ``linspace(-1, 1, size)``; per axis the frequencies are
    ``linspace(1, max_freq / 2, num_bands)`` and the features ``sin(pi f x)``, ``cos(pi f x)``.

    Args:
        shape: grid size per axis, e.g. ``(h, w)`` or ``(t, h, w)``.
        num_bands: frequency bands per axis.
        max_freq: highest resolution per axis (one number or one per axis); ``None`` uses each axis' size, so the
            top band sits at the Nyquist frequency of the grid.
        include_positions: also return the raw normalised positions.

    Returns:
        ``[prod(shape), C]`` with ``C = fourier_channels(len(shape), num_bands, include_positions)``, points in
        row-major order (last axis fastest). Channel layout: ``[positions (ndim) | sin (ndim * num_bands) |
        cos (ndim * num_bands)]``, sin/cos grouped by axis (axis 0's bands first). Values lie in ``[-1, 1]``.
    """
    shape = _check_grid_shape(shape)
    if isinstance(num_bands, bool) or not isinstance(num_bands, int) or num_bands < 0:
        raise ValueError(f"num_bands must be a non-negative integer, got {num_bands!r}")
    if fourier_channels(len(shape), num_bands, include_positions) == 0:
        raise ValueError("num_bands=0 with include_positions=False gives an encoding with no channels")
    max_freqs = _per_axis_max_freq(max_freq, shape)

    axes = [torch.linspace(-1.0, 1.0, size, dtype=torch.float64, device=device) for size in shape]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))  # [N, ndim]
    freqs = torch.stack(
        [torch.linspace(1.0, mf / 2.0, num_bands, dtype=torch.float64, device=device) for mf in max_freqs]
    )  # [ndim, num_bands]
    phases = (math.pi * positions.unsqueeze(-1) * freqs).reshape(positions.shape[0], -1)  # [N, ndim*bands]
    parts = [positions] if include_positions else []
    parts += [phases.sin(), phases.cos()]
    return torch.cat(parts, dim=-1).to(dtype)


class FourierPositionEncoding(nn.Module):
    """Fixed Fourier features for a grid, cached as a non-persistent buffer ``[prod(shape), C]``.

    ``forward(batch_size)`` returns ``[batch_size, prod(shape), C]`` (an expanded view, no copy).
    """

    encoding: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, ...],
        num_bands: int,
        max_freq: float | Sequence[float] | None = None,
        include_positions: bool = True,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        encoding = fourier_position_encoding(self.shape, num_bands, max_freq, include_positions)
        self.register_buffer("encoding", encoding, persistent=False)

    @property
    def num_channels(self) -> int:
        return self.encoding.shape[-1]

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.encoding.unsqueeze(0).expand(batch_size, -1, -1)


class LearnedPositionEncoding(nn.Module):
    """A learned table ``[num_positions, num_channels]`` (truncated normal, std 0.02).

    ``forward(batch_size)`` returns ``[batch_size, num_positions, num_channels]`` (an expanded view).
    """

    def __init__(self, num_positions: int, num_channels: int, init_std: float = 0.02) -> None:
        super().__init__()
        if num_positions <= 0 or num_channels <= 0:
            raise ValueError(
                f"num_positions and num_channels must be positive, got {num_positions} and {num_channels}"
            )
        self.table = nn.Parameter(torch.empty(num_positions, num_channels))
        nn.init.trunc_normal_(self.table, std=init_std, a=-2 * init_std, b=2 * init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.table.unsqueeze(0).expand(batch_size, -1, -1)


def _check_grid_shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    valid = len(shape) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    if not valid:
        raise ValueError(f"shape must be a non-empty tuple of positive integers, got {shape!r}")
    return shape


def _per_axis_max_freq(max_freq: float | Sequence[float] | None, shape: tuple[int, ...]) -> list[float]:
    if max_freq is None:
        return [float(size) for size in shape]
    if isinstance(max_freq, (int, float)):
        max_freqs = [float(max_freq)] * len(shape)
    else:
        max_freqs = [float(mf) for mf in max_freq]
    if len(max_freqs) != len(shape) or not all(math.isfinite(mf) and mf > 0 for mf in max_freqs):
        raise ValueError(
            f"max_freq must be a positive number or one per axis of shape {shape}, got {max_freq!r}"
        )
    return max_freqs
