"""Rotary (1D, partial, 2D grid) and Fourier position encodings."""

from __future__ import annotations

import math

import pytest
import torch

from aime_rl.perception.modules.position import (
    FourierPositionEncoding,
    GridRotaryEmbedding,
    LearnedPositionEncoding,
    RotaryEmbedding,
    fourier_channels,
    fourier_position_encoding,
    grid_positions,
)


def _pair_dot(rope: RotaryEmbedding, q: torch.Tensor, k: torch.Tensor, p: float, p_k: float) -> torch.Tensor:
    """``rotate(q, p) . rotate(k, p_k)`` for single vectors ``q, k [dim]``."""
    q_rot = rope.rotate(q.view(1, -1), torch.tensor([p]))
    k_rot = rope.rotate(k.view(1, -1), torch.tensor([p_k]))
    return (q_rot * k_rot).sum()


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"]
)
def test_rotary_dot_product_depends_only_on_offset(dtype, tolerance):
    torch.manual_seed(0)
    rope = RotaryEmbedding(32)
    q, k = torch.randn(32, dtype=dtype), torch.randn(32, dtype=dtype)
    for p, p_k in [(3, 0), (0, 7), (-5, 4), (2.5, -1.25)]:
        reference = _pair_dot(rope, q, k, p, p_k)
        for shift in (1, -9, 40, 0.75):
            shifted = _pair_dot(rope, q, k, p + shift, p_k + shift)
            assert torch.allclose(shifted, reference, atol=tolerance, rtol=tolerance), (p, p_k, shift)


def test_rotary_attention_scores_are_relative_in_batched_layout():
    torch.manual_seed(1)
    rope = RotaryEmbedding(16)
    q = torch.randn(2, 3, 5, 16, dtype=torch.float64)  # [B, heads, L, head_dim]
    k = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    positions = torch.arange(5)
    scores = rope.rotate(q, positions) @ rope.rotate(k, positions).transpose(-1, -2)
    shifted = rope.rotate(q, positions + 100) @ rope.rotate(k, positions + 100).transpose(-1, -2)
    assert torch.allclose(scores, shifted, atol=1e-9)


def test_rotary_preserves_norm_and_dtype():
    torch.manual_seed(2)
    rope = RotaryEmbedding(64)
    x = torch.randn(2, 4, 10, 64)
    positions = torch.linspace(-50, 50, 10)
    rotated = rope.rotate(x, positions)
    assert rotated.dtype == x.dtype and rotated.shape == x.shape
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
    half = rope.rotate(x.to(torch.bfloat16), positions)
    assert half.dtype == torch.bfloat16


def test_rotary_position_zero_is_identity():
    rope = RotaryEmbedding(8)
    x = torch.randn(3, 6, 8)
    assert torch.equal(rope.rotate(x, torch.zeros(6, dtype=torch.long)), x)


def test_rotary_negative_positions_invert_positive_ones():
    torch.manual_seed(3)
    rope = RotaryEmbedding(16)
    x = torch.randn(4, 16, dtype=torch.float64)
    positions = torch.tensor([1, 7, -3, 250])
    round_trip = rope.rotate(rope.rotate(x, positions), -positions)
    assert torch.allclose(round_trip, x, atol=1e-12)
    assert not torch.allclose(rope.rotate(x, positions), x)


def test_rotary_uses_rotate_half_pairs():
    """Channel i pairs with i + dim/2; the first pair turns by exactly ``position`` radians."""
    rope = RotaryEmbedding(4)
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    rotated = rope.rotate(x, torch.tensor([0.5]))
    expected = torch.tensor([[math.cos(0.5), 0.0, math.sin(0.5), 0.0]], dtype=torch.float64)
    assert torch.allclose(rotated, expected)


def test_rotary_broadcast_positions_per_batch_row():
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 5, 8)
    positions = torch.stack([torch.arange(5), torch.arange(5) - 4]).view(2, 1, 5)  # [B, 1, L]
    rotated = rope.rotate(x, positions)
    assert torch.allclose(rotated[1], rope.rotate(x[1], torch.arange(5) - 4))


def test_rotary_has_no_parameters_or_state():
    rope = RotaryEmbedding(8)
    assert list(rope.parameters()) == []
    assert rope.state_dict() == {}
    assert rope.inv_freq.shape == (4,)


def test_rotary_rejects_an_odd_dim():
    with pytest.raises(ValueError, match="dim"):
        RotaryEmbedding(7)


@pytest.mark.parametrize(
    ("x", "positions", "match"),
    [
        (torch.randn(5, 6), torch.arange(5), "x"),
        (torch.randn(5, 8), torch.arange(4), "positions"),
        (torch.randn(5, 8), 3, "positions"),
    ],
    ids=["x-of-another-dim", "positions-of-another-length", "positions-not-a-tensor"],
)
def test_rotary_rejects_bad_input(x, positions, match):
    rope = RotaryEmbedding(8)
    with pytest.raises(ValueError, match=match):
        rope.rotate(x, positions)


def test_rotate_partial_leaves_tail_untouched():
    torch.manual_seed(4)
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 5, 12)
    positions = torch.arange(5) - 2
    out = rope.rotate_partial(x, positions, rotate_dim=8)
    assert torch.equal(out[..., 8:], x[..., 8:])
    assert torch.allclose(out[..., :8], rope.rotate(x[..., :8], positions))
    with pytest.raises(ValueError, match="rotate_dim"):
        rope.rotate_partial(x, positions, rotate_dim=4)


def test_grid_positions_are_row_major():
    rows, cols = grid_positions(2, 3)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1]
    assert cols.tolist() == [0, 1, 2, 0, 1, 2]
    assert GridRotaryEmbedding.grid_positions(2, 3)[0].tolist() == rows.tolist()


def test_grid_rotary_is_relative_in_both_axes():
    torch.manual_seed(5)
    rope = GridRotaryEmbedding(16)
    q, k = torch.randn(1, 16, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)

    def dot(row_q, col_q, row_k, col_k):
        q_rot = rope.rotate(q, torch.tensor([row_q]), torch.tensor([col_q]))
        k_rot = rope.rotate(k, torch.tensor([row_k]), torch.tensor([col_k]))
        return (q_rot * k_rot).sum()

    reference = dot(3, 1, 0, 5)
    assert torch.allclose(dot(3 + 4, 1, 0 + 4, 5), reference, atol=1e-10)  # shift rows
    assert torch.allclose(dot(3, 1 - 2, 0, 5 - 2), reference, atol=1e-10)  # shift columns
    assert not torch.allclose(dot(3 + 1, 1, 0, 5), reference, atol=1e-6)  # row offset matters
    assert not torch.allclose(dot(3, 1 + 1, 0, 5), reference, atol=1e-6)  # column offset matters


def test_grid_rotary_halves_follow_rows_and_columns():
    rope = GridRotaryEmbedding(8)
    x = torch.randn(6, 8)
    rows, cols = grid_positions(2, 3)
    out = rope.rotate(x, rows, cols)
    assert torch.equal(out[:3, :4], x[:3, :4])  # row 0: first half untouched
    assert torch.equal(out[0::3, 4:], x[0::3, 4:])  # column 0: second half untouched
    with pytest.raises(ValueError, match="dim"):
        GridRotaryEmbedding(6)
    with pytest.raises(ValueError, match="cols"):
        rope.rotate(x, rows, cols[:4])


def test_fourier_encoding_shape_channels_and_range():
    encoding = fourier_position_encoding((4, 6), num_bands=5)
    assert encoding.shape == (24, fourier_channels(2, 5, True)) == (24, 22)
    assert encoding.dtype == torch.float32
    assert encoding.min() >= -1.0 and encoding.max() <= 1.0
    assert fourier_position_encoding((4, 6), 5, include_positions=False).shape == (24, 20)
    assert fourier_position_encoding((3, 4, 5), 2, max_freq=8.0).shape == (60, fourier_channels(3, 2, True))


def test_fourier_encoding_grid_order_and_values():
    h, w, bands = 3, 4, 2
    encoding = fourier_position_encoding((h, w), bands, max_freq=6.0, dtype=torch.float64)
    positions = encoding[:, :2]
    row_coord = torch.linspace(-1, 1, h, dtype=torch.float64).repeat_interleave(w)
    col_coord = torch.linspace(-1, 1, w, dtype=torch.float64).repeat(h)
    assert torch.allclose(positions[:, 0], row_coord) and torch.allclose(positions[:, 1], col_coord)
    freqs = torch.linspace(1.0, 3.0, bands, dtype=torch.float64)  # linspace(1, max_freq / 2, bands)
    row_phase = math.pi * row_coord[:, None] * freqs
    col_phase = math.pi * col_coord[:, None] * freqs
    sines, cosines = encoding[:, 2 : 2 + 2 * bands], encoding[:, 2 + 2 * bands :]
    assert torch.allclose(sines, torch.cat([row_phase.sin(), col_phase.sin()], dim=-1))
    assert torch.allclose(cosines, torch.cat([row_phase.cos(), col_phase.cos()], dim=-1))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (((4, 0), 3), {}, "shape"),
        (((4, 4), -1), {}, "num_bands"),
        (((4, 4), 3), {"max_freq": (4.0,)}, "max_freq"),
    ],
    ids=["empty-shape", "negative-num_bands", "max_freq-of-another-length"],
)
def test_fourier_encoding_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fourier_position_encoding(*args, **kwargs)


def test_position_modules_expand_over_batch():
    fourier = FourierPositionEncoding((2, 3), num_bands=4)
    assert fourier(5).shape == (5, 6, fourier.num_channels)
    assert fourier.state_dict() == {}
    learned = LearnedPositionEncoding(6, 32)
    assert learned(2).shape == (2, 6, 32)


def test_rotary_keeps_precision_after_module_half():
    rope = RotaryEmbedding(16)
    x = torch.randn(5, 16)
    positions = torch.arange(5) * 300
    expected = rope.rotate(x, positions)
    assert torch.allclose(rope.half().rotate(x, positions), expected, atol=1e-6)
    assert rope.angles(positions).dtype == torch.float32
