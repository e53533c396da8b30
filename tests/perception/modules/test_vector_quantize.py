"""VectorQuantize: which loss moves what, the EMA codebook, nearest codes, dead-code restarts, perplexity."""

from __future__ import annotations

import torch

from aime_rl.perception.modules.vector_quantize import VectorQuantize, perplexity_and_usage


def test_commitment_moves_encoder_not_codebook():
    vq = VectorQuantize(dim=8, num_codes=4, num_heads=2, use_ema=False, diversity_weight=0.0)
    z = torch.randn(32, 8, requires_grad=True)
    out = vq(z, update_codebook=False)
    out.commitment.backward()
    assert z.grad.abs().sum() > 0
    assert vq.embed.grad is None or vq.embed.grad.abs().sum() == 0


def test_codebook_loss_moves_codebook_not_encoder():
    vq = VectorQuantize(dim=8, num_codes=4, num_heads=2, use_ema=False, diversity_weight=0.0)
    z = torch.randn(32, 8, requires_grad=True)
    out = vq(z, update_codebook=False)
    out.codebook.backward()
    assert vq.embed.grad.abs().sum() > 0
    assert z.grad is None or z.grad.abs().sum() == 0


def test_ema_codebook_is_a_buffer_updated_without_gradients():
    vq = VectorQuantize(dim=8, num_codes=4, num_heads=2).train()
    assert "embed" not in dict(vq.named_parameters())
    vq(torch.randn(64, 8))
    before = vq.embed.clone()
    vq(torch.randn(64, 8) + 3.0)
    assert not torch.equal(before, vq.embed)


def test_quantized_output_is_the_nearest_code():
    vq = VectorQuantize(dim=4, num_codes=3, num_heads=1).eval()
    vq.embed.copy_(torch.tensor([[[0.0, 0, 0, 0], [1, 1, 1, 1], [-2, -2, -2, -2]]]))
    z = torch.tensor([[0.9, 1.1, 1.0, 0.8], [-1.9, -2.2, -2, -2], [0.1, 0, -0.1, 0]])
    out = vq(z)
    assert out.indices.squeeze(-1).tolist() == [1, 2, 0]
    assert torch.allclose(out.quantized, vq.embed[0, out.indices.squeeze(-1)])


def test_dead_codes_are_restarted_near_the_data():
    vq = VectorQuantize(dim=4, num_codes=8, num_heads=1, kmeans_iters=0, dead_code_threshold=0.5).train()
    vq(torch.randn(256, 4))  # initialise from data
    vq.embed[0, 3] = 1e3  # a code no input will ever choose
    vq.cluster_size[0, 3] = 0.0
    data = torch.randn(256, 4)
    vq(data)
    assert vq.embed[0, 3].abs().max() < 10  # moved back among the data
    assert vq.cluster_size[0, 3] >= 0.5


def test_perplexity_and_usage_on_a_known_histogram():
    counts = torch.tensor([[5.0, 5.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    perplexity, usage = perplexity_and_usage(counts)
    assert torch.allclose(perplexity, torch.tensor([2.0, 4.0]))
    assert torch.allclose(usage, torch.tensor([0.5, 1.0]))
