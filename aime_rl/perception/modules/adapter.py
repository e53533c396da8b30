"""Adapters between token ids and Perceiver channels, plus the LoRA fine-tuning adapters.

- :class:`TokenInputAdapter`: ids ``[..., G]`` (one per VQ head; ``num_codes`` is the mask id) → one embedding per
  position (sum of the G head embeddings) plus a Fourier encoding of the position on the token grid.
- :class:`TiedTokenOutputAdapter`: channels → logits ``[..., G, num_codes]`` per head, scored against the input
  embeddings (weights tied).
- LoRA (``add_lora``, ``merge_lora``, ``remove_lora``, ``lora_parameters``): low-rank updates of a trained model's
  attention/MLP projections, trained with the base frozen, then merged or removed (see ``lora.py``; the public
  import is ``from aime_rl.perception import add_lora, ...``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lora import LoRALinear, add_lora, has_lora, lora_parameters, merge_lora, remove_lora
from .position import fourier_channels, fourier_position_encoding

__all__ = [
    "LoRALinear",
    "TiedTokenOutputAdapter",
    "TokenInputAdapter",
    "add_lora",
    "has_lora",
    "lora_parameters",
    "merge_lora",
    "remove_lora",
]


class TokenInputAdapter(nn.Module):
    """Token ids ``[..., h, w, G]`` → embeddings ``[..., h · w, D]`` with grid positions added."""

    def __init__(self, num_codes: int, num_heads: int, num_channels: int, num_frequency_bands: int = 8):
        super().__init__()
        self.num_codes = num_codes
        self.num_frequency_bands = num_frequency_bands
        # One table per head; row ``num_codes`` is the [MASK] embedding.
        self.embeddings = nn.Parameter(torch.randn(num_heads, num_codes + 1, num_channels) * 0.02)
        self.position = nn.Linear(fourier_channels(2, num_frequency_bands), num_channels)

    @property
    def mask_id(self) -> int:
        return self.num_codes

    @torch.no_grad()
    def init_from_codebook(self, codebook: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start each code's embedding at a random projection of its code vector.

        ``codebook [G, num_codes, d]`` (a trained tokenizer's, ``VQPTTokenizer.codebook``). Each code vector is
        scaled to unit length and mapped through a random ``[d, D]`` matrix per head, entries ``N(0, 0.02²)``: the
        rows keep the usual init scale (0.02 per entry), and codes of similar patches start near each other, where
        independent random rows would make every code a stranger to every other. The [MASK] row is kept; all rows
        stay trainable.
        """
        num_heads, num_rows, channels = self.embeddings.shape
        if codebook.shape[:2] != (num_heads, num_rows - 1):
            raise ValueError(
                f"codebook must be [G={num_heads}, num_codes={num_rows - 1}, d], got {tuple(codebook.shape)}"
            )
        codes = F.normalize(codebook.float().cpu(), dim=-1)
        projection = torch.randn(num_heads, codes.shape[-1], channels, generator=generator) * 0.02
        rows = torch.einsum("gkd,gdc->gkc", codes, projection)
        self.embeddings[:, :-1] = rows.to(self.embeddings)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``[..., G]`` (``mask_id`` allowed) → summed head embeddings ``[..., D]``."""
        # One summing lookup in the flattened [G · (num_codes + 1), D] table: the G rows of a position are added as
        # they are read, never stored side by side (a [..., G, D] tensor, then a sum, is ≈ 2× slower with backward).
        offsets = torch.arange(ids.shape[-1], device=ids.device) * self.embeddings.shape[1]
        rows = (ids + offsets).reshape(-1, ids.shape[-1])
        summed = F.embedding_bag(rows, self.embeddings.flatten(0, 1), mode="sum")
        return summed.reshape(*ids.shape[:-1], summed.shape[-1])

    def grid_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings ``[h · w, D]`` of a token grid (row-major)."""
        fourier = fourier_position_encoding(
            (h, w), self.num_frequency_bands, device=self.position.weight.device
        )
        return self.position(fourier.to(self.position.weight.dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[..., h, w, G]`` → ``[..., h · w, D]``."""
        h, w = ids.shape[-3:-1]
        return self.embed_ids(ids).flatten(-3, -2) + self.grid_encoding(h, w)


class TiedTokenOutputAdapter(nn.Module):
    """Channels ``[..., C]`` → logits ``[..., G, num_codes]`` scored against the input adapter's embeddings.

    ``in_channels`` (``C``): the width of what comes in (default: the embeddings' width ``D``); a map per head
    takes it to ``D``, where it is scored against every code's embedding.
    """

    def __init__(self, input_adapter: TokenInputAdapter, in_channels: int | None = None):
        super().__init__()
        num_heads, _, channels = input_adapter.embeddings.shape
        in_channels = in_channels or channels
        self.input_adapter = [input_adapter]  # a plain list: tied, not a second registered copy
        self.norm = nn.LayerNorm(in_channels)
        self.head_proj = nn.Linear(in_channels, num_heads * channels)
        self.bias = nn.Parameter(torch.zeros(num_heads, input_adapter.num_codes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` → ``[..., G, num_codes]``."""
        table = self.input_adapter[0].embeddings[:, :-1]  # drop the mask row: it is never a target
        heads, num_codes, channels = table.shape
        if not isinstance(self.head_proj, nn.Linear):  # wrapped (a LoRA adapter): map to D, then score
            per_head = self.head_proj(self.norm(x)).unflatten(-1, (heads, channels))
            return torch.einsum("...gd,gkd->...gk", per_head, table) + self.bias
        # (x W_g + b_g) · E_gᵀ computed as x · (W_g E_gᵀ) + b_g E_gᵀ: the map from C channels straight to the codes
        # is built once per call, so each position costs C · G · K multiply-adds instead of C · G · D + G · D · K
        weight = self.head_proj.weight.view(heads, channels, -1)  # [G, D, C]
        to_codes = torch.einsum("gdc,gkd->cgk", weight, table).flatten(1)  # [C, G · K]
        code_bias = torch.einsum("gd,gkd->gk", self.head_proj.bias.view(heads, channels), table) + self.bias
        return (self.norm(x) @ to_codes).unflatten(-1, (heads, num_codes)) + code_bias
