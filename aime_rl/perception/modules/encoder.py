"""PerceiverEncoder: per-frame latent arrays that cross-attend to the tokens of a causal window, then self-attend
(``iterations`` times, with the same layers: a second pass queries the tokens with what the first one found).

For every frame t a copy of the ``N`` learned latent queries (plus an optional condition) cross-attends to the token
embeddings of the frames in its window (a banded causal mask; rotary time positions make it depend only on how old
a key is), then the ``N`` latents of that frame self-attend among themselves. No information flows from frames
after t, so the encoder is causal by construction.

With ``memory_frames`` k > 0, each frame's latents then attend once more, to the latents of frames t − k … t (their
own included, a rotary time position telling each key's age), so what a latent found in an earlier frame (where a
sprite was) meets what it finds now: a displacement is one attention and one MLP away. The receptive field grows by
k frames beyond the token window, and stays bounded.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from .attention import CrossAttentionLayer, SelfAttentionLayer


class PerceiverEncoder(nn.Module):
    """Token embeddings ``[B, L, C_in]`` → latents ``[B, T, N, D]``, one latent array per query frame."""

    def __init__(
        self,
        num_latents: int,
        num_latent_channels: int,
        num_input_channels: int,
        num_cross_attention_heads: int,
        num_self_attention_heads: int,
        num_self_attention_layers: int,
        widening_factor: int,
        dropout: float,
        iterations: int = 1,
        memory_frames: int = 0,
    ):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"encoder_iterations must be >= 1, got {iterations}")
        if isinstance(memory_frames, bool) or not isinstance(memory_frames, int) or memory_frames < 0:
            raise ValueError(f"latent_memory must be an int >= 0, got {memory_frames!r}")
        # how many times the latents cross-attend to the tokens and self-attend (the same layers each time)
        self.iterations = iterations
        self.latents = nn.Parameter(torch.randn(num_latents, num_latent_channels) * 0.02)
        self.cross_attention = CrossAttentionLayer(
            num_latent_channels,
            num_input_channels,
            num_cross_attention_heads,
            widening_factor,
            dropout,
            rotary_time=True,
            null_kv=True,
        )
        self.self_attention = nn.ModuleList(
            SelfAttentionLayer(num_latent_channels, num_self_attention_heads, widening_factor, dropout)
            for _ in range(num_self_attention_layers)
        )
        self.memory_frames = memory_frames
        # each frame's latents over the latents of the last memory_frames frames and their own (None: off)
        self.memory = (
            CrossAttentionLayer(
                num_latent_channels,
                num_latent_channels,
                num_self_attention_heads,
                widening_factor,
                dropout,
                rotary_time=True,
            )
            if memory_frames
            else None
        )

    @property
    def num_latents(self) -> int:
        return self.latents.shape[0]

    def queries(self, batch_size: int, num_frames: int, condition: torch.Tensor | None) -> torch.Tensor:
        """Latent queries ``[B, T · N, D]`` (the condition ``[B, D]`` is added to every latent)."""
        q = repeat(self.latents, "n d -> b (t n) d", b=batch_size, t=num_frames)
        return q if condition is None else q + condition.unsqueeze(1)

    def forward(
        self,
        inputs: torch.Tensor,
        key_time: torch.Tensor,
        query_time: torch.Tensor,
        mask: torch.Tensor,
        condition: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Offline pass.

        inputs ``[B, L, C_in]`` (tokens of all steps), key_time ``[L]`` (frame at which each token was emitted),
        query_time ``[T]``, mask bool ``[T, L]`` (which keys each frame sees), condition ``[B, D]`` or None,
        key_bias (added to the latents' cross-attention scores) ``[B, heads, L]`` for every frame alike, or
        ``[B or 1, heads, T, L]`` per query frame (e.g. a penalty on a key's age), or ``[B or 1, heads, T or 1, N,
        L]`` per query frame and latent (e.g. a penalty on a key's distance from the latent's home), or None
        → latents ``[B, T, N, D]``.
        """
        q, mask, times = self._cross_arguments(inputs, key_time, query_time, mask, condition, key_bias)
        keys, values = self.cross_attention.keys_values(inputs)
        b, t = inputs.shape[0], query_time.shape[0]
        for _ in range(self.iterations):
            latents = self._self_attend(self.cross_attention.attend(q, keys, values, mask, **times), b, t)
            q = rearrange(latents, "b t n d -> b (t n) d")  # the next pass queries with what this one found
        return self.recall(latents, query_time)

    def recall(self, latents: torch.Tensor, query_time: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, N, D]`` of frames ``query_time`` ``[T]`` → the same after each frame's latents attended
        to those of the ``memory_frames`` frames before it and their own (unchanged without ``memory_frames``)."""
        if self.memory is None:
            return latents
        t, n = latents.shape[1:3]
        age = query_time.unsqueeze(1) - query_time.unsqueeze(0)  # [T query, T key]
        mask = repeat((age >= 0) & (age <= self.memory_frames), "q k -> 1 (q i) (k j)", i=n, j=n)
        flat = rearrange(latents, "b t n d -> b (t n) d")
        time = repeat(query_time, "t -> (t n)", n=n)
        recalled = self.memory(flat, flat, mask, q_time=time, k_time=time)
        return rearrange(recalled, "b (t n) d -> b t n d", t=t)

    def recall_keys_values(
        self, latents: torch.Tensor, clock: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame's latents ``[B, N, D]`` → the memory's keys, rotated by the frame's time ``clock`` ``[B]``, and
        values ``[B, heads, N, head_dim]``: what a stream keeps of a frame for the ``memory_frames`` frames after
        it (rotated once, like the token keys: the scores depend on the difference of the clocks only)."""
        keys, values = self.memory.keys_values(latents)
        return self.memory.attention.rotate_keys(keys, clock), values

    def recall_step(
        self,
        latents: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        past_valid: torch.Tensor,
        clock: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Streaming :meth:`recall` of one frame (with ``memory_frames`` k).

        ``latents`` ``[B, N, D]`` of the frame; ``past_keys``/``past_values`` ``[B, heads, k · N, head_dim]``: the
        :meth:`recall_keys_values` of the k frames before it, newest first (positions ``j · N … (j + 1) · N − 1``:
        ``j + 1`` frames ago); ``past_valid`` bool ``[B, k]``: which of those exist (False before an episode's first
        frame); ``clock`` ``[B]``: the frame's time on the clock the past keys were rotated by → the recalled
        latents ``[B, N, D]`` and this frame's keys and values ``[B, heads, N, head_dim]`` (the next steps' past).
        Each frame's latents are projected once, not once per frame that remembers them.
        """
        b, n = latents.shape[:2]
        keys, values = self.recall_keys_values(latents, clock)
        valid = torch.cat([past_valid.new_ones(b, 1), past_valid], dim=1)
        mask = repeat(valid, "b a -> b 1 (a n)", n=n)
        q_time = clock.unsqueeze(1).expand(b, n)
        recalled = self.memory.attend_prepared(
            latents,
            torch.cat([keys, past_keys], dim=2),
            torch.cat([values, past_values], dim=2),
            mask,
            q_time,
        )
        return recalled, keys, values

    def cross_attention_weights(
        self,
        inputs: torch.Tensor,
        key_time: torch.Tensor,
        query_time: torch.Tensor,
        mask: torch.Tensor,
        condition: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Where each frame's latents look: the cross-attention weights of :meth:`forward` (same arguments) →
        ``[B, T, N, heads, 1 + L]``, key 0 being the null key ("nothing here"), keys ``1 … L`` the inputs."""
        q, mask, times = self._cross_arguments(inputs, key_time, query_time, mask, condition, key_bias)
        weights = self.cross_attention.weights(q, inputs, mask, **times)
        return rearrange(weights, "b h (t n) l -> b t n h l", t=query_time.shape[0])

    def _cross_arguments(self, inputs, key_time, query_time, mask, condition, key_bias) -> tuple:
        """The cross-attention's arguments for every frame's latent queries at once: queries ``[B, T·N, D]``, the
        mask ``[1, T·N, L]`` and the keywords (query times ``[T·N]``, key times, key bias)."""
        b, t, n = inputs.shape[0], query_time.shape[0], self.num_latents
        if key_bias is not None and key_bias.dim() == 4:  # per query frame → per latent query
            key_bias = repeat(key_bias, "b h t l -> b h (t n) l", n=n)
        elif key_bias is not None and key_bias.dim() == 5:  # per query frame (or all alike) and latent
            key_bias = rearrange(key_bias.expand(-1, -1, t, n, -1), "b h t n l -> b h (t n) l")
        times = dict(q_time=repeat(query_time, "t -> (t n)", n=n), k_time=key_time, key_bias=key_bias)
        return self.queries(b, t, condition), repeat(mask, "t l -> 1 (t n) l", n=n), times

    def step(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        clock: torch.Tensor,
        visible: torch.Tensor,
        condition: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One frame from a streaming cache → latents ``[B, N, D]``.

        ``keys``/``values`` ``[B, heads, L, d]`` hold the null key first and the past tokens' keys rotated by the
        frame they were emitted at (``cross_attention.attention.rotate_keys``); ``clock`` ``[B]`` is the current
        frame on the same clock; ``visible`` bool ``[B, L]`` says which keys the frame may see; ``key_bias``
        ``[B, heads, L]``, or ``[B or 1, heads, N, L]`` per latent (the null key's included), or None.
        """
        b, n = keys.shape[0], self.num_latents
        x = self.queries(b, 1, condition)
        q_time = clock.unsqueeze(1).expand(b, n)
        for _ in range(self.iterations):
            x = self.cross_attention.attend_prepared(x, keys, values, visible.unsqueeze(1), q_time, key_bias)
            x = self._self_attend(x, b, 1).squeeze(1)
        return x

    def _self_attend(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        x = rearrange(x, "b (t n) d -> (b t) n d", t=t)
        for layer in self.self_attention:
            x = layer(x)
        return rearrange(x, "(b t) n d -> b t n d", b=b)
