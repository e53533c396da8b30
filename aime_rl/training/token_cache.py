"""Tokens of a replay store, computed once: the context model trains on them instead of re-tokenizing every window.

The tokenizer is frozen while the context model trains, so tokenizing each sampled window again at every step is
wasted work. :func:`build_token_cache` tokenizes every episode of a store once, from its first frame (exactly what
the streaming tokenizer computes online, where an episode starts with its first frame), and writes one
``<episode key>.npy`` per episode (int16 ``[L, h, w, G]``) plus ``manifest.json`` (the tokenizer's fingerprint, the
grid, each episode's length). :class:`TokenWindowDataset` draws the same windows as
:class:`~aime_rl.replay.dataset.ReplayWindowDataset` (same seed → same episodes and starts) and returns their
tokens.

With per-frame (2D) tokenizers the cached tokens of a window equal the window's freshly computed tokens exactly.
With causal 3D convolutions a window cut from the middle of an episode is padded with its own first frame when
tokenized alone, so its first few tokens can differ from the cached ones; the cached ones are those the agent's
stream sees.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..perception import VQPTTokenizer
from ..replay.dataset import ReplayWindowDataset
from ..replay.store import ReplayStore
from ..utils.io import atomic_write, atomic_write_json, read_json

MANIFEST = "manifest.json"
FORMAT = "aime-rl-token-cache-1"


def tokenizer_fingerprint(tokenizer: VQPTTokenizer) -> str:
    """SHA-256 of the tokenizer's parameters and buffers (the cache is valid for exactly these weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def tokenize_episode(tokenizer: VQPTTokenizer, frames: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Frames uint8 ``[L, 3, H, W]`` of one episode → tokens int16 ``[L', h, w, G]``, computed from its first frame.

    Per-frame tokenizers run in chunks of ``chunk`` frames; temporal (3D) ones on the whole episode at once, so that
    every frame's tokens see the frames before it as the stream would.
    """
    device = next(tokenizer.parameters()).device
    video = torch.from_numpy(np.ascontiguousarray(frames)).unsqueeze(0)
    if tokenizer.config.use_3d_conv:
        pieces = [tokenizer.tokens(video.to(device))]
    else:
        pieces = [
            tokenizer.tokens(video[:, i : i + chunk].to(device)) for i in range(0, video.shape[1], chunk)
        ]
    tokens = torch.cat(pieces, dim=1)[0]
    tokens = tokens if tokens.dim() == 4 else tokens.unsqueeze(-1)
    return tokens.to(torch.int16).cpu().numpy()


def build_token_cache(
    store_dir: str | os.PathLike, tokenizer: VQPTTokenizer, cache_dir: str | os.PathLike
) -> dict[str, Any]:
    """Tokenize every episode of ``store_dir`` that the cache does not hold yet; returns the manifest.

    A cache made with other tokenizer weights is rebuilt from scratch. Each episode file is written atomically and
    the manifest last, so an interrupted build leaves a valid cache of the episodes it finished.
    """
    if tokenizer.num_codes > np.iinfo(np.int16).max:
        raise ValueError(f"token cache stores int16 ids; num_codes={tokenizer.num_codes} is too large")
    cache_dir = Path(cache_dir)
    store = ReplayStore.open(store_dir)
    fingerprint = tokenizer_fingerprint(tokenizer)
    manifest = read_json(cache_dir / MANIFEST) if (cache_dir / MANIFEST).is_file() else {}
    if manifest.get("tokenizer") != fingerprint or manifest.get("format") != FORMAT:
        manifest = {"format": FORMAT, "tokenizer": fingerprint, "episodes": {}}
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        for episode in store.episodes:
            if manifest["episodes"].get(episode.key) == len(episode):
                continue
            frames = np.ascontiguousarray(np.moveaxis(episode.frames(), -1, 1))  # [L, H, W, 3] → [L, 3, H, W]
            tokens = tokenize_episode(tokenizer, frames)
            atomic_write(cache_dir / f"{episode.key}.npy", lambda tmp, t=tokens: _save_npy(tmp, t))
            manifest["episodes"][episode.key] = len(episode)
            manifest["grid"] = list(tokens.shape[1:])
    finally:
        tokenizer.train(was_training)
    atomic_write_json(cache_dir / MANIFEST, manifest)
    return manifest


def _save_npy(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    Path(path).write_bytes(buffer.getvalue())


class TokenWindowDataset(ReplayWindowDataset):
    """:class:`ReplayWindowDataset` whose item ``s`` holds the cached ``tokens`` (int64 ``[B, T', h, w, G]``) of the
    windows of step ``s`` instead of their frames (plus ``episode_index`` and ``start`` ``[B]``).

    Needs a per-frame tokenizer (``T' = T``) and a cache built by :func:`build_token_cache` for the same store.
    """

    def __init__(self, store_dir: str | os.PathLike, cache_dir: str | os.PathLike, *args: Any, **kwargs: Any):
        super().__init__(store_dir, *args, **kwargs)
        self.cache_dir = Path(cache_dir)
        self._tokens: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(
        cls, store_dir, config, subset: str = "train", cache_dir=None, **kwargs
    ) -> TokenWindowDataset:
        kwargs.setdefault("seed", config.seed)
        kwargs.setdefault("holdout_fraction", config.holdout_fraction)
        kwargs.setdefault("num_workers", config.num_workers)
        return cls(store_dir, cache_dir, config.batch_size, config.sequence_length, subset=subset, **kwargs)

    def episode_tokens(self, index: int) -> np.ndarray:
        """Tokens ``[L, h, w, G]`` of the store's episode ``index`` (memory-mapped, opened once)."""
        if index not in self._tokens:
            episode = self.store.episodes[index]
            path = self.cache_dir / f"{episode.key}.npy"
            if not path.is_file():
                raise ValueError(f"token cache {self.cache_dir} has no tokens for episode {episode.key}")
            self._tokens[index] = np.load(path, mmap_mode="r")
        return self._tokens[index]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = {}  # memory maps are reopened by each worker
        return state

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        episodes, starts = self.window_starts(step)
        windows = [
            self.episode_tokens(int(e))[int(s) : int(s) + self.length]
            for e, s in zip(episodes, starts, strict=True)
        ]
        return {
            "tokens": torch.from_numpy(np.stack(windows).astype(np.int64)),
            "episode_index": torch.from_numpy(episodes),
            "start": torch.from_numpy(starts),
        }
