"""On-disk replay of raw frames, actions and rewards: crash-safe episode store, window sampling, recorders.

``ReplayStore`` writes episodes (memory-mapped frames, atomic commits) and samples windows that never cross
episode boundaries; ``ReplayWindowDataset`` gives the deterministic batch of every training step (uint8 frames
``[B, T, 3, H, W]``; DDP shards, DataLoader workers); ``RecordFrames`` and ``VecRecordFrames`` record a running
gymnasium env or SB3 VecEnv. The step convention (row ``t`` holds ``o_t``, ``a_t``, ``r_{t+1}`` and the flags
produced by ``a_t``; the last row holds the final observation) is documented in :mod:`aime_rl.replay.store`.
"""

from aime_rl.replay.dataset import ReplayWindowDataset
from aime_rl.replay.recorder import RecordFrames, VecRecordFrames, resize_frames
from aime_rl.replay.store import Episode, EpisodeWriter, RecoveryReport, ReplayStore

__all__ = [
    "Episode",
    "EpisodeWriter",
    "RecordFrames",
    "RecoveryReport",
    "ReplayStore",
    "ReplayWindowDataset",
    "VecRecordFrames",
    "resize_frames",
]
