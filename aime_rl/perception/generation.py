"""Sampling future video from a :class:`~aime_rl.perception.PerceiverTokenPredictor`: MaskGIT and autoregressive.

:class:`TokenGenerationMixin` holds the predictor's ``generate`` and its sampling loops; it uses the predictor's
``tokenizer``, ``tokenize``, ``encode_tokens``, ``memory``, ``predict_logits`` and ``input_adapter.mask_id``.
MaskGIT reads the context video as training does (its pixel motion marks and pixel changes included); the
autoregressive loop re-encodes generated tokens, which have no frames, so it reads the tokens alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange


class TokenGenerationMixin:
    """``generate(context_video, num_frames, method=...)`` for :class:`~aime_rl.perception.PerceiverTokenPredictor`."""

    @torch.no_grad()
    def generate(
        self,
        context_video: torch.Tensor,
        num_frames: int,
        method: str = "maskgit",
        steps: int = 8,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Continue ``context_video [B, T, C, H, W]`` by ``num_frames`` frames.

        ``method="maskgit"``: all future tokens at once, ``steps`` rounds of parallel sampling; after each round
        the least confident sampled positions (confidence + Gumbel noise annealed to 0) are re-masked following a
        cosine schedule; positions already fixed are never re-masked. ``method="autoregressive"``: one token step
        at a time, each sampled in one pass from the latents of everything before it.

        Returns ``{"tokens": [B, F', h, w(, G)], "frames": [B, num_frames, C, H, W]}``.
        """
        if method not in ("maskgit", "autoregressive"):
            raise ValueError(f"method must be 'maskgit' or 'autoregressive', got {method!r}")
        video = self.tokenizer.check_video(context_video, "context_video")
        if num_frames < 1 or num_frames % self.frames_per_token_step:
            raise ValueError(
                f"num_frames must be a positive multiple of {self.frames_per_token_step}, got {num_frames}"
            )
        future_steps = num_frames // self.frames_per_token_step
        tokens = self.tokenize(video)
        if method == "maskgit":
            motion, changes = self._motion_marks(video), self._pixel_changes(video)
            local_motion = self.local_motion_features(tokens, video)
            latents = self.encode_tokens(
                tokens, video.shape[1], self.window, motion=motion, changes=changes, local_motion=local_motion
            )
            memory = self.memory(latents)[:, -1]
            shape = (tokens.shape[0], future_steps, *tokens.shape[2:4])
            generated = self._maskgit(memory, tokens[:, -1], shape, steps, temperature, generator)
        else:
            generated = self._autoregressive(tokens, video.shape[1], future_steps, temperature, generator)
        frames = self.tokenizer.decode(self._squeeze(torch.cat([tokens, generated], dim=1)))
        return {"tokens": self._squeeze(generated), "frames": frames[:, video.shape[1] :]}

    def _sample(
        self, logits: torch.Tensor, temperature: float, generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[..., G, K]`` → (sampled ids ``[..., G]``, log-confidence ``[...]`` summed over heads)."""
        log_probs = F.log_softmax(logits.float() / max(temperature, 1e-6), dim=-1)
        flat = rearrange(log_probs, "... k -> (...) k").exp()
        ids = torch.multinomial(flat, 1, generator=generator).view(log_probs.shape[:-1])
        confidence = torch.gather(log_probs, -1, ids.unsqueeze(-1)).squeeze(-1).sum(-1)
        return ids, confidence

    def _maskgit(self, memory, last_tokens, shape, steps: int, temperature: float, generator) -> torch.Tensor:
        b = shape[0]
        ids = torch.full(
            (*shape, self.tokenizer.num_quantizers), self.input_adapter.mask_id, device=memory.device
        )
        unknown = torch.ones(shape, dtype=torch.bool, device=memory.device)
        positions = unknown[0].numel()
        for step in range(steps):
            logits = self.predict_logits(memory, ids, last_tokens)
            sampled, confidence = self._sample(logits, temperature, generator)
            sampled = torch.where(unknown.unsqueeze(-1), sampled, ids)
            keep_masked = math.floor(positions * math.cos(0.5 * math.pi * (step + 1) / steps))
            uniform = torch.rand(confidence.shape, generator=generator, device=confidence.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-9, 1 - 1e-9)))
            noise_scale = temperature * (1 - (step + 1) / steps)  # annealed to 0 at the last step
            score = (confidence + noise_scale * gumbel).masked_fill(~unknown, float("inf"))
            order = score.view(b, -1).argsort(-1).argsort(-1).view(shape)
            remask = order < keep_masked
            ids = sampled.masked_fill(remask.unsqueeze(-1), self.input_adapter.mask_id)
            unknown = remask
        return ids

    def _autoregressive(self, tokens, num_frames: int, future_steps: int, temperature: float, generator):
        for _ in range(future_steps):
            memory = self.memory(self.encode_tokens(tokens, num_frames, self.window))[:, -1]
            masked = torch.full_like(tokens[:, :1], self.input_adapter.mask_id)
            logits = self.predict_logits(memory, masked, tokens[:, -1])
            sampled, _ = self._sample(logits, temperature, generator)
            tokens = torch.cat([tokens, sampled], dim=1)
            num_frames += self.frames_per_token_step
        return tokens[:, -future_steps:]
