"""The bounded key/value cache of streaming attention (:class:`WindowKVCache`) and its causal-window helpers
(:func:`window_mask`, :func:`check_window`), shared by the Perceiver modules."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ...utils.validation import row_index

#: Slots a :class:`WindowKVCache` starts with (fewer when the window needs fewer).
INITIAL_SLOTS = 8


def window_mask(query_time: torch.Tensor, key_time: torch.Tensor, window: int | None) -> torch.Tensor:
    """Bool ``[Tq, Lk]``: query at frame ``query_time[i]`` may see key emitted at frame ``key_time[j]``.

    A key is visible when ``t − window < key_time <= t`` (all past keys when ``window`` is None).
    """
    age = query_time.unsqueeze(-1) - key_time.unsqueeze(-2)
    visible = age >= 0
    if window is not None:
        visible &= age < window
    return visible


def check_window(window: int | None, name: str = "window") -> None:
    """``window`` must be None or an int >= 1."""
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {window!r}")


class WindowKVCache:
    """Keys/values of the last emitted steps of each batch row, for attention from the current frame.

    Each slot holds the ``tokens_per_step`` keys/values of one emitted step and its *age* in frames. Every frame
    ``advance()`` ages all slots and moves each row's ``clock`` (frames since the row's start, 0 at its first
    frame); ``write()`` puts a new step (age 0) into the oldest slot of the chosen rows. A key is visible while
    ``age < window``. The cache starts with at most :data:`INITIAL_SLOTS` slots and doubles when a row needs
    more: with a window it stops at ``ceil(window / frames_per_step)`` slots (a ring buffer from then on), so
    memory stops growing once the window is full and never exceeds what the frames seen so far need (a window of
    ``10**9`` costs no more than ``None`` until that many frames arrive); with ``window=None`` it keeps growing.

    ``prefix`` (keys, values ``[heads, P, head_dim]``, e.g. an attention layer's null key) fills the first ``P``
    positions of every row and is always visible, so attention needs no per-step concatenation.

    ``key_bias=True`` keeps a score bias per key as well (``bias [B, heads, P + slots · tokens_per_step]``, 0 for
    the prefix), written with the keys.

    Tensors: keys/values ``[B, heads, P + slots · tokens_per_step, head_dim]``, ages int64 ``[B, slots]``,
    clock int64 ``[B]``.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        tokens_per_step: int,
        window: int | None,
        frames_per_step: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_bias: bool = False,
    ):
        self.window = window
        self.tokens_per_step = tokens_per_step
        self.prefix_length = 0 if prefix is None else prefix[0].shape[1]
        self.max_slots = None if window is None else -(-window // frames_per_step)
        slots = INITIAL_SLOTS if self.max_slots is None else min(self.max_slots, INITIAL_SLOTS)
        length = self.prefix_length + slots * tokens_per_step
        self.keys = torch.zeros(batch_size, num_heads, length, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.bias = self.keys.new_zeros(self.keys.shape[:3]) if key_bias else None
        if prefix is not None:
            self.set_prefix(prefix)
        self.age = torch.zeros(batch_size, slots, dtype=torch.long, device=device)
        self.valid = torch.zeros(batch_size, slots, dtype=torch.bool, device=device)
        self.next_slot = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.clock = torch.full((batch_size,), -1, dtype=torch.long, device=device)

    def set_prefix(self, prefix: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Overwrite the prefix keys/values ``[heads, P, head_dim]`` of every row (e.g. after a weight update)."""
        p = self.prefix_length
        self.keys[:, :, :p] = prefix[0].to(self.keys.dtype)
        self.values[:, :, :p] = prefix[1].to(self.values.dtype)

    @property
    def num_slots(self) -> int:
        return self.age.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the cache tensors."""
        tensors = (self.keys, self.values, self.bias, self.age, self.valid, self.next_slot, self.clock)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def select(self, rows: torch.Tensor) -> WindowKVCache:
        """An independent cache of the chosen rows: bool mask ``[B]`` or int64 indices ``[k]`` → batch ``k``.

        The rows' keys/values ``[k, heads, P + slots · tokens_per_step, head_dim]`` (prefix included), ages and
        valid flags ``[k, slots]``, next slots and clocks ``[k]`` are copied; the slot count, window and
        ``prefix_length`` stay. Keys were rotated at write by their row's own clock, which travels with the row, so
        they need no change. Raises ``ValueError`` naming ``rows``.
        """
        index = row_index(rows, self.keys.shape[0], self.keys.device)
        selected = copy.copy(self)
        for name in ("keys", "values", "age", "valid", "next_slot", "clock"):
            setattr(selected, name, getattr(self, name)[index])
        selected.bias = None if self.bias is None else self.bias[index]
        return selected

    def advance(self) -> None:
        """One frame passes for every row."""
        self.age += 1
        self.clock += 1

    def write(
        self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None = None
    ) -> None:
        """Store ``keys``/``values`` ``[B, heads, tokens_per_step, head_dim]`` (and, in a ``key_bias`` cache,
        ``bias [B, heads, tokens_per_step]``) for rows where ``rows`` (bool [B])."""
        if (bias is None) != (self.bias is None):
            raise ValueError(
                "a key_bias cache needs a bias with every write, and only such a cache takes one"
            )
        if self._can_grow() and bool((self.next_slot[rows] >= self.num_slots).any()):
            self._grow()
        slot = self.next_slot % self.num_slots
        written_rows = rows.nonzero().squeeze(1)
        written_slots = slot[written_rows]
        b, h, _, d = self.keys.shape
        by_slot = (b, h, self.num_slots, self.tokens_per_step, d)
        # In place: [rows, :, slot] of the [B, heads, slots, tokens, d] view is [R, heads, tokens, d].
        p = self.prefix_length
        self.keys[:, :, p:].view(by_slot)[written_rows, :, written_slots] = keys[written_rows].to(
            self.keys.dtype
        )
        self.values[:, :, p:].view(by_slot)[written_rows, :, written_slots] = values[written_rows].to(
            self.values.dtype
        )
        if bias is not None:
            self.bias[:, :, p:].view(by_slot[:-1])[written_rows, :, written_slots] = bias[written_rows].to(
                self.bias.dtype
            )
        self.age[written_rows, written_slots] = 0
        self.valid[written_rows, written_slots] = True
        self.next_slot = self.next_slot + rows.long()

    def visible(self) -> torch.Tensor:
        """Bool ``[B, P + slots · tokens_per_step]``: which cached keys the current frame may attend to."""
        visible = self.valid if self.window is None else self.valid & (self.age < self.window)
        visible = visible.repeat_interleave(self.tokens_per_step, dim=1)
        return F.pad(visible, (self.prefix_length, 0), value=True) if self.prefix_length else visible

    def key_time(self) -> torch.Tensor:
        """Time of each cached slot key relative to the current frame, ``−age``, ``[B, slots · tokens_per_step]``
        (without the prefix)."""
        return (-self.age).repeat_interleave(self.tokens_per_step, dim=1)

    def reset(self, rows: torch.Tensor) -> None:
        """Forget everything of the rows where ``rows`` (bool [B]) is True."""
        self.valid[rows] = False
        self.age[rows] = 0
        self.next_slot[rows] = 0
        self.clock[rows] = -1

    def _can_grow(self) -> bool:
        return self.max_slots is None or self.num_slots < self.max_slots

    def _grow(self) -> None:
        """Double the number of slots, up to ``max_slots``.

        Only called before any row wrapped around (every row's slots ``0 … next_slot − 1`` are in order), so the
        new, empty slots are simply appended: keys/values ``[B, heads, P + slots · tokens, d]`` gain
        ``added · tokens`` positions, ages/valid flags ``[B, slots]`` gain ``added`` columns.
        """
        added = (
            self.num_slots if self.max_slots is None else min(self.num_slots, self.max_slots - self.num_slots)
        )
        b, h, _, d = self.keys.shape
        extra = torch.zeros(
            b, h, added * self.tokens_per_step, d, dtype=self.keys.dtype, device=self.keys.device
        )
        self.keys = torch.cat([self.keys, extra], dim=2)
        self.values = torch.cat([self.values, torch.zeros_like(extra)], dim=2)
        if self.bias is not None:
            self.bias = torch.cat([self.bias, extra[..., 0].clone()], dim=2)
        self.age = torch.cat([self.age, self.age.new_zeros(b, added)], dim=1)
        self.valid = torch.cat([self.valid, self.valid.new_zeros(b, added)], dim=1)
