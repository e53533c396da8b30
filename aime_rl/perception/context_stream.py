"""ContextStream: the causal context one frame at a time, equal to the offline ``extract_context``.

Per step it runs one frame through the tokenizer's streaming encoder (cached conv activations), projects the new
tokens to keys/values once and stores them in a bounded window cache, and lets this frame's latent queries attend
to the cached keys of the last ``window`` frames. The cost of a step does not depend on t, and memory stops
growing once the window is full (with ``window=None`` the cache keeps every past frame and grows). The cache
grows with the frames that arrive, so a huge window (``10**9``) allocates no more than the frames seen.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ..utils.validation import check_batch_size, row_index
from .losses import FOREGROUND_THRESHOLD
from .modules.kv_cache import WindowKVCache
from .modules.local_motion import pixel_motion_cells
from .modules.temporal import FIRST, TIMESCALES, change_marks, motion_marks, pixel_changes
from .predictor import PerceiverTokenPredictor


class ContextStream:
    """Online context for ``batch_size`` parallel streams (e.g. one per vectorised env).

    ``step(frames [B, C, H, W])`` → context ``[B, D]``; ``reset(mask)`` restarts the rows where the bool ``[B]``
    mask is True (new episodes), exactly as a fresh stream would start; ``select(rows)`` is an independent stream
    over some of the rows (e.g. to step a few rows on other frames without touching this one).

    After a step, ``last_tokens`` ``[B, h, w(, G)]`` and ``last_latents`` ``[B, N, D]`` hold what the context was
    computed from: this frame's tokens and its N latents before pooling (``[B, N + 1, D]`` with
    ``local_motion_context``: the motion slot the pooling also reads) — to probe each stage, or to feed a belief
    filter the tokens without tokenizing twice.
    """

    def __init__(
        self,
        predictor: PerceiverTokenPredictor,
        batch_size: int,
        window: int | None = 16,
        condition: torch.Tensor | None = None,
        timescale: str = "fast",
    ):
        batch_size = check_batch_size(batch_size)
        self.predictor = predictor
        self.batch_size = batch_size
        self.window = window
        self.timescale = timescale
        self.tokens = predictor.tokenizer.stream(batch_size)
        self.condition = predictor.embed_condition(condition, batch_size)
        self._device = self.tokens.cache.device
        self._token_cache: WindowKVCache | None = None  # created on the first frame (token grid known then)
        self.last_tokens: torch.Tensor | None = None
        self.last_latents: torch.Tensor | None = None
        # with change marks (mark_changes, motion_attention_bias): each row's last emitted tokens [B, h, w, G],
        # and whether it has any in this episode
        self._previous: torch.Tensor | None = None
        self._has_previous = torch.zeros(batch_size, dtype=torch.bool, device=self._device)
        # with motion_attention_bias or pixel_changes: each row's frame of its last emitted token step [B, C, H, W]
        # (float in [0, 1])
        self._previous_frame: torch.Tensor | None = None
        # with local_motion_frames k: each row's tokens of its last k − 1 token steps [B, k − 1, h, w, G] (their
        # cell patches [B, k − 1, h, w, C · p · p] with local_motion_inputs="pixels"; index j: j + 1 steps ago) and
        # how many of them are in this episode [B]
        self._history: torch.Tensor | None = None
        self._history_count = torch.zeros(batch_size, dtype=torch.long, device=self._device)
        # with latent_memory k: the memory's keys and values of each row's last k frames [B, heads, k · N, d]
        # (newest first, rotated by their frame's clock; PerceiverEncoder.recall_keys_values) and which of those
        # frames are in this episode [B, k]
        memory = predictor.encoder.memory_frames
        self._past_keys: torch.Tensor | None = None
        self._past_values: torch.Tensor | None = None
        self._past_valid = torch.zeros(batch_size, memory, dtype=torch.bool, device=self._device)
        span = TIMESCALES[timescale]
        self._summary_cache = (
            self._new_cache(predictor.timescales[timescale].attention, 1, span) if span else None
        )

    def _new_cache(
        self,
        layer,
        tokens_per_step: int,
        window: int | None,
        frames_per_step: int = 1,
        prefix=None,
        key_bias: bool = False,
    ) -> WindowKVCache:
        attention = layer.attention
        dtype = next(self.predictor.parameters()).dtype
        return WindowKVCache(
            self.batch_size,
            attention.num_heads,
            attention.head_dim,
            tokens_per_step,
            window,
            frames_per_step,
            device=self._device,
            dtype=dtype,
            prefix=prefix,
            key_bias=key_bias,
        )

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """One frame per row ``[B, C, H, W]`` → context ``[B, D]``.

        ``frames``: uint8 in [0, 255] or float in [0, 1] (float16/bfloat16/float64 are converted), of the model's
        ``frame_size``, with the stream's batch size; anything else raises ``ValueError`` naming ``frames``.
        """
        p = self.predictor
        tokens = self.tokens.step(frames)
        self.last_tokens = (
            tokens  # [B, h, w(, G)]; reusable by other per-step consumers (e.g. a belief filter)
        )
        emitted = self.tokens.last_emitted
        if tokens.dim() == 3:
            tokens = tokens.unsqueeze(-1)
        cross = p.encoder.cross_attention
        null = cross.attention.null_keys_values()
        if self._token_cache is None:
            n = tokens.shape[1] * tokens.shape[2]
            self._token_cache = self._new_cache(
                cross,
                n,
                self.window,
                p.frames_per_token_step,
                prefix=null,
                key_bias=p.motion_bias is not None,
            )
        cache = self._token_cache
        if null is not None:
            cache.set_prefix(null)  # a few bytes; stays right when the weights change under a running stream
        cache.advance()
        local_motion = None
        if bool(emitted.any()):
            # Keys are rotated once, by the frame they are emitted at; the query is rotated by the current frame.
            # The scores depend on the difference only, so no cached key is touched again.
            tokens = tokens.clamp_min(0)  # rows that did not emit are ignored by write()
            if p.reads_frames:  # the motion marks and pixel changes compare pixels in [0, 1]
                frames = p.tokenizer.check_frames(frames, "frames")
            motion_step = self._local_motion_step(tokens, frames)
            local_motion = self._local_motion(motion_step)
            inputs = p.embed_inputs(
                tokens,
                self._marks(tokens),
                self._previous_tokens(tokens),
                self._pixel_changes(frames),
                local_motion,
            )
            keys, values = cross.keys_values(inputs)
            bias = p.key_bias(self._motion_marks(frames, tuple(tokens.shape[1:3])))
            self._remember(tokens, frames, emitted, motion_step)
            cache.write(cross.attention.rotate_keys(keys, cache.clock), values, rows=emitted, bias=bias)
        latents = p.encoder.step(
            cache.keys,
            cache.values,
            cache.clock,
            cache.visible(),
            self.condition,
            key_bias=self._key_bias(cache, tuple(tokens.shape[1:3])),
        )
        latents = self._recall(latents, cache.clock)
        # local_motion_context: a tokenizer without temporal downsampling emits a token step every frame
        latents = p.with_motion_slot(latents, local_motion)
        self.last_latents = (
            latents  # [B, N, D], [B, N + 1, D] with local_motion_context: what the pooling reads
        )
        fast = p.frame_context(latents)
        context = fast if self._summary_cache is None else self._summarise(fast)
        return p.output_context(context, self.timescale)

    def _recall(self, latents: torch.Tensor, clock: torch.Tensor) -> torch.Tensor:
        """This frame's latents ``[B, N, D]`` after they attended to the last frames' (``latent_memory``); the
        frame's memory keys and values are kept for the next steps. ``clock`` ``[B]``: the frame's time."""
        encoder = self.predictor.encoder
        if encoder.memory is None:
            return latents
        n = latents.shape[1]
        if self._past_keys is None:
            attention = encoder.memory.attention
            shape = (self.batch_size, attention.num_heads, encoder.memory_frames * n, attention.head_dim)
            self._past_keys, self._past_values = latents.new_zeros(shape), latents.new_zeros(shape)
        recalled, keys, values = encoder.recall_step(
            latents, self._past_keys, self._past_values, self._past_valid, clock
        )
        now = torch.ones_like(self._past_valid[:, :1])
        self._past_keys = torch.cat([keys, self._past_keys[:, :, :-n]], dim=2)
        self._past_values = torch.cat([values, self._past_values[:, :, :-n]], dim=2)
        self._past_valid = torch.cat([now, self._past_valid[:, :-1]], dim=1)
        return recalled

    def _key_bias(self, cache: WindowKVCache, grid: tuple[int, int]) -> torch.Tensor | None:
        """The cross-attention score bias of every cached key ``[B, heads, P + L]``: the motion bonus written with
        the keys plus, with ``recency_bias``, the penalty of each key's age now (0 for the prefix); with
        ``spatial_attention_bias`` also each latent's penalty of the key's cell on the token ``grid``, ``[B or 1,
        heads, N, P + L]``; None without any of them."""
        p = self.predictor
        bias = cache.bias
        if p.recency_slope is not None:
            recency = F.pad(p.recency_scores(-cache.key_time()), (cache.prefix_length, 0))
            bias = recency if bias is None else bias + recency
        spatial = p.spatial_scores(*grid)
        if spatial is None:
            return bias
        # the cache holds slots of one step's cells each, in grid order, after the prefix
        spatial = F.pad(repeat(spatial, "h n c -> 1 h n (s c)", s=cache.num_slots), (cache.prefix_length, 0))
        return spatial if bias is None else bias.unsqueeze(2) + spatial

    def _marks(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Change marks ``[B, h, w]`` of this step's tokens ``[B, h, w, G]`` against each row's previous ones (the
        first step of an episode is ``FIRST``, as in the offline pass). None without change marks."""
        if not self.predictor.uses_change_marks:
            return None
        previous = tokens if self._previous is None else self._previous
        marks = change_marks(tokens.unsqueeze(1), previous)[:, 0]
        marks[~self._has_previous] = FIRST
        return marks

    def _previous_tokens(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Each row's tokens of its previous step ``[B, h, w, G]`` (this step's own at an episode's first step, as
        offline); None without ``previous_tokens``."""
        if self.predictor.previous_proj is None:
            return None
        if self._previous is None:
            return tokens
        return torch.where(self._has_previous.view(-1, 1, 1, 1), self._previous, tokens)

    def _local_motion_step(self, tokens: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
        """What the local motion encoder keeps of this step: its tokens ``[B, h, w, G]``, or with
        ``local_motion_inputs="pixels"`` the cells of its frame ``[B, h, w, C · p · p]``
        (:func:`~aime_rl.perception.modules.local_motion.pixel_motion_cells`); None without
        ``local_motion_frames``."""
        p = self.predictor
        if p.local_motion is None:
            return None
        return pixel_motion_cells(frames, tuple(tokens.shape[1:3])) if p.local_motion_reads_pixels else tokens

    def _local_motion(self, step: torch.Tensor | None) -> torch.Tensor | None:
        """This step's local motion features ``[B, h, w, C]`` from what it keeps of it (:meth:`_local_motion_step`,
        ``[B, h, w, ·]``) and each row's last ones ("unknown" before the episode's first step, as offline); None
        without ``local_motion_frames``."""
        p = self.predictor
        if step is None:
            return None
        k = p.local_motion.frames
        if self._history is None:
            self._history = step.unsqueeze(1).repeat(1, k - 1, 1, 1, 1)
        history = torch.cat([step.unsqueeze(1), self._history], dim=1)  # [B, k, h, w, ·], newest first
        known = torch.arange(k, device=self._device) <= self._history_count.unsqueeze(1)  # [B, k]
        return p.local_motion_from_history(history, known)

    def _motion_marks(self, frames: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        """Pixel motion marks ``[B, h, w]`` of this frame ``[B, C, H, W]`` (float in [0, 1]) against each row's
        frame of its previous token step (``FIRST`` at an episode's first step, as offline). None without the
        motion bias."""
        if self.predictor.motion_bias is None:
            return None
        previous = frames if self._previous_frame is None else self._previous_frame
        marks = motion_marks(frames.unsqueeze(1), grid, FOREGROUND_THRESHOLD, previous)[:, 0]
        marks[~self._has_previous] = FIRST
        return marks

    def _pixel_changes(self, frames: torch.Tensor) -> torch.Tensor | None:
        """Pixel changes ``[B, h, w, C · p · p]`` of this frame ``[B, C, H, W]`` (float in [0, 1]) against each
        row's frame of its previous token step (zero at an episode's first step, as offline). None without
        ``pixel_changes``."""
        p = self.predictor
        if p.change_proj is None:
            return None
        previous = frames if self._previous_frame is None else self._previous_frame
        previous = torch.where(self._has_previous.view(-1, 1, 1, 1), previous, frames)
        grid = p.tokenizer.token_grid(*frames.shape[-2:])
        return pixel_changes(frames.unsqueeze(1), grid, previous)[:, 0]

    def _remember(
        self,
        tokens: torch.Tensor,
        frames: torch.Tensor,
        emitted: torch.Tensor,
        motion_step: torch.Tensor | None = None,
    ) -> None:
        """Keep the emitted rows' tokens and frame as their previous step's (for the marks of the next one), and
        what the local motion encoder keeps of the step (``motion_step``, see :meth:`_local_motion_step`)."""
        if self.predictor.keeps_previous_tokens:
            previous = tokens if self._previous is None else self._previous
            self._previous = torch.where(emitted.view(-1, 1, 1, 1), tokens, previous)
        if self.predictor.reads_frames:
            previous = frames if self._previous_frame is None else self._previous_frame
            self._previous_frame = torch.where(emitted.view(-1, 1, 1, 1), frames, previous)
        if self._history is not None:
            shifted = torch.cat([motion_step.unsqueeze(1), self._history[:, :-1]], dim=1)
            self._history = torch.where(emitted.view(-1, 1, 1, 1, 1), shifted, self._history)
            grown = (self._history_count + 1).clamp_max(self._history.shape[1])
            self._history_count = torch.where(emitted, grown, self._history_count)
        self._has_previous = self._has_previous | emitted

    def _summarise(self, fast: torch.Tensor) -> torch.Tensor:
        summary = self.predictor.timescales[self.timescale]
        cache = self._summary_cache
        cache.advance()
        keys, values = summary.attention.keys_values(rearrange(fast, "b d -> b 1 d"))
        cache.write(keys, values, rows=torch.ones(self.batch_size, dtype=torch.bool, device=fast.device))
        return summary.step(fast, cache.keys, cache.values, cache.key_time(), cache.visible())

    def select(self, rows: torch.Tensor) -> ContextStream:
        """An independent stream over the chosen rows: bool mask ``[B]`` or int64 indices ``[k]`` → batch ``k``.

        It shares the predictor (modules and weights) and holds its own copies of the rows' state: the tokenizer
        stream's conv cache, the key/value caches (``[k, heads, L, head_dim]``, ages, clocks), the embedded
        condition ``[k, D]`` (when conditioned), ``last_tokens`` and ``last_latents`` (after a step). So
        ``select(rows).step(frames[rows])`` gives the context ``[k, D]`` that ``step(frames)`` gives in those rows,
        and stepping or resetting the selection never changes this stream. Costs a copy of the rows' caches only.
        Raises ``ValueError`` naming ``rows`` for an empty selection or indices outside ``[0, B)``.
        """
        index = row_index(rows, self.batch_size, self._device)
        selected = copy.copy(self)
        selected.batch_size = index.numel()
        selected.tokens = self.tokens.select(index)
        selected.condition = _rows_of(self.condition, index)
        selected.last_tokens = _rows_of(self.last_tokens, index)
        selected.last_latents = _rows_of(self.last_latents, index)
        selected._previous = _rows_of(self._previous, index)
        selected._previous_frame = _rows_of(self._previous_frame, index)
        selected._has_previous = self._has_previous[index]
        selected._history = _rows_of(self._history, index)
        selected._history_count = self._history_count[index]
        selected._past_keys = _rows_of(self._past_keys, index)
        selected._past_values = _rows_of(self._past_values, index)
        selected._past_valid = self._past_valid[index]
        selected._token_cache = None if self._token_cache is None else self._token_cache.select(index)
        selected._summary_cache = None if self._summary_cache is None else self._summary_cache.select(index)
        return selected

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart rows where ``mask`` (bool ``[B]``) is True; every row when None."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool)
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self._device)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"mask must be bool [{self.batch_size}], got shape {tuple(mask.shape)}")
        self.tokens.reset(mask)
        self._has_previous = self._has_previous & ~mask
        self._history_count = self._history_count.masked_fill(mask, 0)
        self._past_valid = self._past_valid & ~mask.unsqueeze(1)
        for cache in (self._token_cache, self._summary_cache):
            if cache is not None:
                cache.reset(mask)

    def nbytes(self) -> int:
        """Bytes held by all caches (tokenizer conv state, attention keys/values, the memory keys/values and token
        steps kept for ``latent_memory`` and ``local_motion_frames``)."""
        caches = [c for c in (self._token_cache, self._summary_cache) if c is not None]
        kept = [t for t in (self._past_keys, self._past_values, self._history) if t is not None]
        memory = sum(t.numel() * t.element_size() for t in kept)
        return self.tokens.cache.nbytes() + sum(c.nbytes() for c in caches) + memory


def _rows_of(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """A copy of ``tensor[index]`` (``[B, ...]`` → ``[k, ...]``); None stays None."""
    return None if tensor is None else tensor[index.to(tensor.device)]
