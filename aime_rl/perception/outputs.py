"""Typed outputs of the perception models: named, documented fields instead of loose dicts and tuples.

- :class:`TokenizerEncoding` — ``VQPTTokenizer.encode``: still the seed's tuple ``(tokens, vq_loss, perplexity)``.
- :class:`TokenizerLoss` — ``VQPTTokenizer.loss`` / ``forward``.
- :class:`PredictorOutput` — ``PerceiverTokenPredictor.forward`` / ``forward_tokens`` (and ``CausalPerceiverIO``'s).

The dict-replacing outputs read like the dicts they replace (as Hugging Face's ``ModelOutput``): ``out["loss"]``,
``"loss" in out``, ``out.get(...)``, ``keys()/values()/items()``, ``dict(out)`` and ``{**out}`` see the fields that
are set (not None), in field order. They are registered as pytree nodes, so DDP and ``torch.export`` see the tensors
inside. ``G`` is ``num_quantizers``; the ``(, G)`` dim is absent when ``G == 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch


class ModelOutput(Mapping):
    """Base of the dataclass outputs: read access by field name, like a dict of the fields that are not None.

    Equality is identity (comparing tensors elementwise is not what ``==`` on an output should do).
    """

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    __eq__ = object.__eq__
    __hash__ = object.__hash__


class TokenizerEncoding(NamedTuple):
    """What ``VQPTTokenizer.encode`` returns: the seed's tuple ``tokens, vq_loss, perplexity = encode(video)``.

    Also readable by name (``out.tokens``, ``out["tokens"]``).
    """

    #: int64 ``[B, T', h, w(, G)]``: code ids in ``[0, num_codes)`` (``T' = T / 2`` with ``temporal_downsample``)
    tokens: torch.Tensor
    #: scalar: weighted commitment + codebook + diversity loss of this batch (codebooks not updated)
    vq_loss: torch.Tensor
    #: ``[G]``: per-head perplexity of this batch's codes
    perplexity: torch.Tensor

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


@dataclass(eq=False)
class TokenizerLoss(ModelOutput):
    """What ``VQPTTokenizer.loss`` (and its ``forward``) returns: the training objective and what it saw.

    Scalars: ``total`` (what to minimise), ``reconstruction`` (MSE in [0, 1] pixel units), ``foreground`` (the MSE
    over the pixels that differ from the clip's static background, weighted by ``foreground_weight``; 0 when off),
    ``stability`` (the temporal-stability term of static cells, weighted by ``stability_weight``; 0 when off),
    ``commitment``, ``codebook``, ``diversity`` (the VQ terms) and ``perceptual`` (LPIPS; 0 when off).
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    foreground: torch.Tensor
    stability: torch.Tensor
    commitment: torch.Tensor
    codebook: torch.Tensor
    diversity: torch.Tensor
    perceptual: torch.Tensor
    #: whether the LPIPS term was computed (``perceptual_weight > 0`` and LPIPS weights available)
    perceptual_enabled: bool
    #: ``[G]``: per-head perplexity of the batch's codes
    perplexity: torch.Tensor
    #: ``[G]``: per-head share of the codebook the batch used
    usage: torch.Tensor
    #: int64 ``[B, T', h, w(, G)]``
    tokens: torch.Tensor
    #: ``[B, T, C, H, W]``, unclamped (≈ [0, 1])
    reconstructed: torch.Tensor


@dataclass(eq=False)
class PredictorOutput(ModelOutput):
    """What ``PerceiverTokenPredictor.forward`` returns (``F'`` = future token steps, ``K`` = ``num_codes``).

    ``reconstructed`` is None (and not among the keys) for :meth:`~PerceiverTokenPredictor.forward_tokens` and for
    ``forward(..., reconstruct=False)``.
    Scalars: ``loss`` (total), ``token_loss`` (masked cross-entropy on the future), ``next_frame_loss``,
    ``context_prediction_loss``, ``contrastive_loss``, ``latent_reconstruction_loss``, ``local_motion_loss``,
    ``perceptual`` (0 when off)
    and ``accuracy`` (on the masked future tokens).
    """

    #: int64 ``[B, F', h, w(, G)]``: the predicted future tokens (the true ones where unmasked)
    predicted_tokens: torch.Tensor
    #: ``[B, F', h, w, G, K]``
    logits: torch.Tensor
    loss: torch.Tensor
    token_loss: torch.Tensor
    next_frame_loss: torch.Tensor
    context_prediction_loss: torch.Tensor
    contrastive_loss: torch.Tensor
    latent_reconstruction_loss: torch.Tensor
    local_motion_loss: torch.Tensor
    perceptual: torch.Tensor
    #: whether the LPIPS term was computed
    perceptual_enabled: bool
    accuracy: torch.Tensor
    #: bool ``[B, F', h, w]``: the future positions that were masked (all of them in eval mode)
    mask: torch.Tensor
    #: ``[B, T, C, H, W]``: context frames reconstructed, future frames decoded from the prediction
    reconstructed: torch.Tensor | None = None

    def to_tuple(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The seed's ``forward(..., return_dict=False)``: ``(reconstructed, predicted_tokens, logits, loss)``."""
        return self.reconstructed, self.predicted_tokens, self.logits, self.loss


torch.export.register_dataclass(TokenizerLoss, serialized_type_name="aime_rl.perception.TokenizerLoss")
torch.export.register_dataclass(PredictorOutput, serialized_type_name="aime_rl.perception.PredictorOutput")
