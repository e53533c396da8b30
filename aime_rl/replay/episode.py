"""One episode of a replay store: :class:`Episode` (read side) and :class:`EpisodeWriter` (write side).

An :class:`Episode` holds the small per-row arrays in RAM and reads frames through its store's memory maps; an
:class:`EpisodeWriter` buffers rows and has its store commit them in chunks. Rows follow the step convention of
:mod:`aime_rl.replay.store`. Both are made by a :class:`~aime_rl.replay.store.ReplayStore`, never directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aime_rl.replay.chunks import DATA_KEYS, _Chunk

if TYPE_CHECKING:  # annotations only: the store imports this module, never the other way round at run time
    from aime_rl.replay.store import ReplayStore


# ----------------------------------------------------------------------------------------------------------------
# episodes (read side)
# ----------------------------------------------------------------------------------------------------------------


class Episode:
    """A stored episode: small arrays in RAM, frames memory-mapped on demand.

    Arrays have one entry per row (see :mod:`aime_rl.replay.store`): ``actions [L, *action_shape]``, ``rewards [L]``
    float32, ``terminated [L]`` / ``truncated [L]`` bool, with ``L = len(episode)``.
    """

    def __init__(self, store: ReplayStore, key: str, index: int):
        self._store = store
        self.key = key
        self.index = index
        self.chunks: list[_Chunk] = []
        self._chunk_starts = np.zeros(0, dtype=np.int64)
        self.actions = np.zeros(0)
        self.rewards = np.zeros(0, dtype=np.float32)
        self.terminated = np.zeros(0, dtype=bool)
        self.truncated = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return f"Episode(index={self.index}, key={self.key!r}, rows={len(self)}, complete={self.complete})"

    @property
    def complete(self) -> bool:
        """True when the episode's last chunk was committed (``finish`` ran)."""
        return bool(self.chunks) and self.chunks[-1].last

    @property
    def has_final_observation(self) -> bool:
        """True when the last row is the final observation with a dummy action."""
        return self.complete and self.chunks[-1].final_observation

    @property
    def num_steps(self) -> int:
        """Environment steps (rows with a real action)."""
        return len(self) - int(self.has_final_observation)

    @property
    def committed_ns(self) -> int:
        return self.chunks[0].committed_ns

    def _append_chunks(self, chunks: list[_Chunk], arrays: list[dict[str, np.ndarray]]) -> None:
        self.chunks.extend(chunks)
        self._chunk_starts = np.array([c.start for c in self.chunks], dtype=np.int64)
        for name in DATA_KEYS:
            parts = [getattr(self, name)] if len(self) else []
            setattr(self, name, np.concatenate(parts + [a[name] for a in arrays]))

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames of rows ``start:stop`` as uint8 ``[n, H, W, 3]``.

        A memory-mapped view (``np.memmap``) when the rows lie in one chunk, else a concatenated copy.
        """
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"rows {start}:{stop} out of range for episode {self.key} with {len(self)} rows")
        pieces = [frames[lo:hi] for frames, lo, hi in self._chunk_slices(start, stop)]
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros((0, *self._store.frame_shape), np.uint8)

    def copy_frames_chw(self, start: int, out: np.ndarray) -> None:
        """Copy rows ``start : start + len(out)`` into ``out`` uint8 ``[n, 3, H, W]`` (channels-first)."""
        offset = 0
        for frames, lo, hi in self._chunk_slices(start, start + len(out)):
            out[offset : offset + hi - lo] = frames[lo:hi].transpose(0, 3, 1, 2)
            offset += hi - lo

    def _chunk_slices(self, start: int, stop: int):
        """Yield ``(chunk frames memmap, lo, hi)`` covering rows ``start:stop``."""
        first = int(np.searchsorted(self._chunk_starts, start, side="right")) - 1
        for chunk in self.chunks[max(first, 0) :]:
            if chunk.start >= stop:
                break
            lo, hi = (
                max(start, chunk.start) - chunk.start,
                min(stop, chunk.start + chunk.length) - chunk.start,
            )
            if hi > lo:
                yield self._store._open_frames(chunk), lo, hi


# ----------------------------------------------------------------------------------------------------------------
# episodes (write side)
# ----------------------------------------------------------------------------------------------------------------


class EpisodeWriter:
    """Buffers one episode's rows and commits them in chunks of ``store.chunk_length`` rows.

    ``add(frame, action, reward, terminated, truncated)`` appends row ``t`` (see :mod:`aime_rl.replay.store`);
    ``finish(final_frame)`` appends the final-observation row and commits the rest. Until ``finish``, the rows not
    yet in a full chunk live only in memory: a crash loses them, nothing else.
    """

    def __init__(self, store: ReplayStore, key: str):
        self.store = store
        self.key = key
        self.num_steps = 0
        self.closed = False
        self._rows: list[tuple[np.ndarray, np.ndarray, float, bool, bool]] = []
        self._committed_rows = 0
        self._committed_chunks = 0
        self._ended = False

    def __repr__(self) -> str:
        return f"EpisodeWriter(key={self.key!r}, steps={self.num_steps}, closed={self.closed})"

    def add(self, frame: np.ndarray, action: Any, reward: float, terminated: bool, truncated: bool) -> None:
        """Append one step: frame ``o_t`` uint8 ``[H, W, 3]``, action ``a_t``, reward ``r_{t+1}`` and flags."""
        self._check_open()
        if self._ended:
            raise ValueError(f"episode {self.key} already terminated/truncated; call finish(final_frame)")
        row = (self.store._coerce_frame(frame), self.store._coerce_action(action), float(reward))
        if len(self._rows) == self.store.chunk_length:
            self._commit(last=False, final=False)
        self._rows.append((*row, bool(terminated), bool(truncated)))
        self.num_steps += 1
        self._ended = bool(terminated) or bool(truncated)

    def finish(self, final_frame: np.ndarray | None, *, mark_truncated: bool = False) -> str:
        """Append the final observation ``o_n`` (``None``: unknown, no final row) and commit; return the key.

        ``mark_truncated=True`` sets ``truncated`` on the last step: use it when recording stops mid-episode.
        """
        self._check_open()
        if self.num_steps == 0:
            raise ValueError(f"episode {self.key} has no steps; use abandon()")
        frame = None if final_frame is None else self.store._coerce_frame(final_frame)
        if mark_truncated and not self._ended:
            _, _, _, terminated, _ = self._rows[-1]
            self._rows[-1] = (*self._rows[-1][:3], terminated, True)
        last_flags = self._rows[-1][3:]
        if frame is not None:
            if len(self._rows) == self.store.chunk_length:
                self._commit(last=False, final=False)
            zeros = np.zeros(self.store.action_shape, dtype=self.store.action_dtype)
            self._rows.append((frame, zeros, 0.0, *last_flags))
        self._commit(last=True, final=frame is not None)
        self.closed = True
        return self.key

    def abandon(self) -> None:
        """Drop the rows not yet committed. Chunks already committed stay, as an incomplete episode."""
        self._rows = []
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"episode {self.key} is already finished")

    def _commit(self, last: bool, final: bool) -> None:
        frames, actions, rewards, terminated, truncated = zip(*self._rows, strict=True)
        rows = {
            "frames": np.stack(frames),
            "actions": np.stack(actions),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
        }
        self.store._commit_chunk(self.key, self._committed_chunks, self._committed_rows, rows, last, final)
        self._committed_chunks += 1
        self._committed_rows += len(self._rows)
        self._rows = []
