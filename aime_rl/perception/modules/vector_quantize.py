"""Multi-head vector quantization with EMA codebooks, k-means init, dead-code restart and an entropy diversity loss.

The ``dim`` channels of each vector are split into ``num_heads`` groups of ``dim / num_heads`` channels; every head
has its own codebook of ``num_codes`` entries, so one position gets ``num_heads`` indices.

Losses (all scalars, already multiplied by their weights):

- ``commitment = commitment_weight · ||z_e − sg(z_q)||²``: pulls the *encoder* towards its code; the codebook gets no
  gradient from it.
- ``codebook = ||sg(z_e) − z_q||²`` (only with ``use_ema=False``): pulls the *codebook* towards the encoder output;
  the encoder gets no gradient from it. With EMA the codebook follows exponential moving averages instead.
- ``diversity = diversity_weight · (mean per-sample entropy − entropy of the mean assignment)`` (MaskGIT's form):
  confident assignments, spread over the whole codebook.

The quantized output is straight-through: ``z_e + sg(z_q − z_e)``, so gradients reach the encoder unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class QuantizerOutput:
    """What :meth:`VectorQuantize.forward` returns for ``N`` input vectors.

    quantized: ``[N, dim]`` straight-through quantized vectors.
    indices: int64 ``[N, num_heads]``.
    commitment, codebook, diversity: weighted scalar losses (``codebook`` is 0 with EMA codebooks).
    perplexity, usage: ``[num_heads]`` — exp(entropy) of the batch's code histogram, and the fraction of codes used.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    codebook: torch.Tensor
    diversity: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """Sum of the weighted VQ losses (scalar)."""
        return self.commitment + self.codebook + self.diversity


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``x [G, N, d]``, ``codebook [G, K, d]`` → squared Euclidean distances ``[G, N, K]``."""
    x_sq = x.pow(2).sum(-1, keepdim=True)
    c_sq = codebook.pow(2).sum(-1).unsqueeze(1)
    return torch.baddbmm(x_sq + c_sq, x, codebook.transpose(1, 2), alpha=-2.0)


def code_histogram(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """``indices [G, N]`` → counts ``[G, K]`` (float)."""
    counts = torch.zeros(indices.shape[0], num_codes, device=indices.device)
    return counts.scatter_add_(1, indices, torch.ones_like(indices, dtype=counts.dtype))


def perplexity_and_usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Code counts ``[G, K]`` → (perplexity ``[G]`` = exp(entropy of the histogram), usage ``[G]`` in [0, 1])."""
    probs = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return entropy.exp(), (counts > 0).float().mean(-1)


def entropy_diversity_loss(distances: torch.Tensor, temperature: float) -> torch.Tensor:
    """MaskGIT's entropy loss from distances ``[G, N, K]``: mean per-sample entropy − entropy of the mean."""
    log_probs = F.log_softmax(-distances.float() / temperature, dim=-1)
    probs = log_probs.exp()
    per_sample = -(probs * log_probs).sum(-1).mean()
    marginal = probs.mean(1)
    codebook_entropy = -(marginal * marginal.clamp_min(1e-12).log()).sum(-1).mean()
    return per_sample - codebook_entropy


def kmeans(x: torch.Tensor, init: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means per head. ``x [G, N, d]``, ``init [G, K, d]`` → (centroids ``[G, K, d]``, counts ``[G, K]``).

    Empty clusters keep their previous centroid.
    """
    centroids = init.clone()
    counts = torch.zeros(init.shape[:2], device=x.device)
    for _ in range(max(iterations, 1)):
        assign = squared_distances(x, centroids).argmin(-1)
        counts = code_histogram(assign, init.shape[1])
        sums = torch.zeros_like(centroids).scatter_add_(1, assign.unsqueeze(-1).expand_as(x), x)
        filled = counts > 0
        centroids = torch.where(filled.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), centroids)
    return centroids, counts


def sample_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x [G, N, d]`` → ``k`` rows per head ``[G, k, d]`` (without replacement when ``N >= k``)."""
    n = x.shape[1]
    if n >= k:
        idx = torch.stack([torch.randperm(n, device=x.device)[:k] for _ in range(x.shape[0])])
    else:
        idx = torch.randint(0, n, (x.shape[0], k), device=x.device)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class VectorQuantize(nn.Module):
    """Multi-head VQ layer: vectors ``[N, dim]`` → straight-through codes ``[N, dim]`` and ids ``[N, num_heads]``.

    Args:
        dim: channels of each input vector; must be divisible by ``num_heads``.
        num_codes: codebook size per head.
        num_heads: number of independent codebooks (G).
        commitment_weight: weight of the commitment term.
        diversity_weight: weight of the entropy diversity term (0 disables it).
        diversity_temperature: softmax temperature over negative squared distances for that term.
        use_ema: EMA codebook updates (else the codebook is a parameter trained by the codebook loss).
        decay: EMA decay.
        kmeans_iters: k-means iterations for the data initialisation on the first training batch (0: samples only).
        dead_code_threshold: codes whose EMA usage count falls below this are restarted from batch vectors.
    """

    def __init__(
        self,
        dim: int,
        num_codes: int,
        num_heads: int = 1,
        commitment_weight: float = 0.05,
        diversity_weight: float = 0.1,
        diversity_temperature: float = 1.0,
        use_ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 1.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"code_dim={dim} must be divisible by num_quantizers={num_heads}")
        self.dim, self.num_codes, self.num_heads = dim, num_codes, num_heads
        self.head_dim = dim // num_heads
        self.commitment_weight = commitment_weight
        self.diversity_weight = diversity_weight
        self.diversity_temperature = diversity_temperature
        self.use_ema, self.decay, self.eps = use_ema, decay, eps
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold

        embed = torch.randn(num_heads, num_codes, self.head_dim)
        if use_ema:
            self.register_buffer("embed", embed)
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("cluster_size", torch.zeros(num_heads, num_codes))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("initialized", torch.tensor(False))

    # -- lookups -------------------------------------------------------------------------------------------------

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code ids ``[..., G]`` → concatenated code vectors ``[..., G · head_dim]``."""
        flat = rearrange(indices, "... g -> g (...)")
        vectors = torch.gather(self.embed, 1, flat.unsqueeze(-1).expand(-1, -1, self.head_dim))
        return rearrange(vectors, "g n d -> n (g d)").reshape(*indices.shape[:-1], self.dim)

    def soft_lookup(self, probs: torch.Tensor) -> torch.Tensor:
        """Distributions over codes ``[..., G, K]`` → expected code vectors ``[..., G · head_dim]`` (differentiable)."""
        vectors = torch.einsum("...gk,gkd->...gd", probs, self.embed.to(probs.dtype))
        return rearrange(vectors, "... g d -> ... (g d)")

    def quantize_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code ids ``[N, G]`` for vectors ``[N, dim]`` (no losses, no updates)."""
        x = rearrange(z, "n (g d) -> g n d", g=self.num_heads)
        return squared_distances(x, self.embed.to(x.dtype)).argmin(-1).t()

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, z: torch.Tensor, update_codebook: bool | None = None) -> QuantizerOutput:
        """Quantize ``z [N, dim]``.

        ``update_codebook`` (default: ``self.training``) runs the data initialisation on first use, the EMA updates
        and dead-code restarts. Pass False to quantize without touching the codebook (e.g. a frozen tokenizer).
        """
        update = self.training if update_codebook is None else update_codebook
        x = rearrange(z.to(self.embed.dtype), "n (g d) -> g n d", g=self.num_heads)
        if update and not bool(self.initialized):
            self._init_from_data(x.detach())
        # The EMA update below rewrites ``self.embed`` in place: compute with a snapshot autograd can keep.
        codebook_now = self.embed.clone() if (update and self.use_ema) else self.embed
        distances = squared_distances(x, codebook_now)
        indices = distances.argmin(-1)
        counts = code_histogram(indices, self.num_codes)
        quantized = torch.gather(codebook_now, 1, indices.unsqueeze(-1).expand(-1, -1, self.head_dim))
        if update:
            self._update_codebook(x.detach(), indices, counts)

        commitment = self.commitment_weight * F.mse_loss(x, quantized.detach())
        codebook = F.mse_loss(x.detach(), quantized) if not self.use_ema else x.new_zeros(())
        diversity = (
            self.diversity_weight * entropy_diversity_loss(distances, self.diversity_temperature)
            if self.diversity_weight > 0
            else x.new_zeros(())
        )
        straight_through = x + (quantized - x).detach()
        perplexity, usage = perplexity_and_usage(counts)
        return QuantizerOutput(
            quantized=rearrange(straight_through, "g n d -> n (g d)").to(z.dtype),
            indices=indices.t().contiguous(),
            commitment=commitment,
            codebook=codebook,
            diversity=diversity,
            perplexity=perplexity,
            usage=usage,
        )

    # -- codebook maintenance ------------------------------------------------------------------------------------

    @torch.no_grad()
    def _init_from_data(self, x: torch.Tensor) -> None:
        centroids, counts = kmeans(x, sample_rows(x, self.num_codes), self.kmeans_iters)
        self._set_codebook(_broadcast_(centroids), _broadcast_(counts))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _set_codebook(self, centroids: torch.Tensor, counts: torch.Tensor) -> None:
        self.embed.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(centroids * counts.unsqueeze(-1))

    @torch.no_grad()
    def _update_codebook(self, x: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        if self.use_ema:
            sums = torch.zeros_like(self.embed_avg).scatter_add_(1, indices.unsqueeze(-1).expand_as(x), x)
            self.cluster_size.mul_(self.decay).add_(_all_reduce_sum_(counts.clone()), alpha=1 - self.decay)
            self.embed_avg.mul_(self.decay).add_(_all_reduce_sum_(sums), alpha=1 - self.decay)
            total = self.cluster_size.sum(-1, keepdim=True)
            smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
            self.embed.copy_(self.embed_avg / smoothed.unsqueeze(-1))
        else:
            self.cluster_size.mul_(self.decay).add_(_all_reduce_sum_(counts.clone()), alpha=1 - self.decay)
        self._restart_dead_codes(x)

    @torch.no_grad()
    def _restart_dead_codes(self, x: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        if not bool(_all_reduce_sum_(dead.any().float()) > 0):
            return
        replacements = _broadcast_(sample_rows(x, self.num_codes))
        dead = _broadcast_(dead.float()).bool()
        self.embed.data.copy_(torch.where(dead.unsqueeze(-1), replacements, self.embed))
        self.cluster_size.masked_fill_(dead, self.dead_code_threshold)
        self.embed_avg.copy_(
            torch.where(dead.unsqueeze(-1), replacements * self.dead_code_threshold, self.embed_avg)
        )

    @torch.no_grad()
    def adapt(self, z: torch.Tensor, iterations: int = 10) -> None:
        """Refresh the codebooks towards new-domain vectors ``z [N, dim]`` (k-means from the current codes).

        Codes unused on the new data are first re-seeded from its vectors, then k-means refines all codes; EMA
        statistics are reset to the new assignment counts.
        """
        x = rearrange(z.to(self.embed.dtype), "n (g d) -> g n d", g=self.num_heads)
        used = code_histogram(squared_distances(x, self.embed).argmin(-1), self.num_codes) > 0
        init = torch.where(used.unsqueeze(-1), self.embed, sample_rows(x, self.num_codes))
        centroids, counts = kmeans(x, init, iterations)
        self._set_codebook(_broadcast_(centroids), _broadcast_(counts))
        self.initialized.fill_(True)
