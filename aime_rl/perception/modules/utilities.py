"""Shared helpers of the Perceiver modules: causal window masks and a bounded key/value cache for streaming."""

from __future__ import annotations

import torch


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
    ``advance()`` ages all slots; ``write()`` puts a new step (age 0) into the oldest slot of the chosen rows.
    A key is visible while ``age < window``. With a window the cache has a fixed number of slots
    (``ceil(window / frames_per_step)``), so memory stops growing once it is full; with ``window=None`` it grows.

    Tensors: keys/values ``[B, heads, slots · tokens_per_step, head_dim]``, ages int64 ``[B, slots]``.
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
    ):
        self.window = window
        self.tokens_per_step = tokens_per_step
        slots = -(-window // frames_per_step) if window is not None else 8
        self.keys = torch.zeros(
            batch_size, num_heads, slots * tokens_per_step, head_dim, device=device, dtype=dtype
        )
        self.values = torch.zeros_like(self.keys)
        self.age = torch.zeros(batch_size, slots, dtype=torch.long, device=device)
        self.valid = torch.zeros(batch_size, slots, dtype=torch.bool, device=device)
        self.next_slot = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def num_slots(self) -> int:
        return self.age.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the cache tensors."""
        tensors = (self.keys, self.values, self.age, self.valid, self.next_slot)
        return sum(t.numel() * t.element_size() for t in tensors)

    def advance(self) -> None:
        """One frame passes for every row."""
        self.age += 1

    def write(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``[B, heads, tokens_per_step, head_dim]`` for rows where ``rows`` (bool [B])."""
        if self.window is None and bool((self.next_slot[rows] >= self.num_slots).any()):
            self._grow()
        slot = self.next_slot % self.num_slots
        written_rows = rows.nonzero().squeeze(1)
        written_slots = slot[written_rows]
        b, h, _, d = self.keys.shape
        by_slot = (b, h, self.num_slots, self.tokens_per_step, d)
        # In place: [rows, :, slot] of the [B, heads, slots, tokens, d] view is [R, heads, tokens, d].
        self.keys.view(by_slot)[written_rows, :, written_slots] = keys[written_rows].to(self.keys.dtype)
        self.values.view(by_slot)[written_rows, :, written_slots] = values[written_rows].to(self.values.dtype)
        self.age[written_rows, written_slots] = 0
        self.valid[written_rows, written_slots] = True
        self.next_slot = self.next_slot + rows.long()

    def visible(self) -> torch.Tensor:
        """Bool ``[B, slots · tokens_per_step]``: which cached keys the current frame may attend to."""
        visible = self.valid if self.window is None else self.valid & (self.age < self.window)
        return visible.repeat_interleave(self.tokens_per_step, dim=1)

    def key_time(self) -> torch.Tensor:
        """Time of each cached key relative to the current frame, ``−age``, ``[B, slots · tokens_per_step]``."""
        return (-self.age).repeat_interleave(self.tokens_per_step, dim=1)

    def reset(self, rows: torch.Tensor) -> None:
        """Forget everything of the rows where ``rows`` (bool [B]) is True."""
        self.valid[rows] = False
        self.age[rows] = 0
        self.next_slot[rows] = 0

    def _grow(self) -> None:
        """Double the number of slots (only with ``window=None``)."""
        self.keys = torch.cat([self.keys, torch.zeros_like(self.keys)], dim=2)
        self.values = torch.cat([self.values, torch.zeros_like(self.values)], dim=2)
        self.age = torch.cat([self.age, torch.zeros_like(self.age)], dim=1)
        self.valid = torch.cat([self.valid, torch.zeros_like(self.valid)], dim=1)
