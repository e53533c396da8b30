"""The seed's tokenizer demo: video → tokens → reconstruction, with shapes, code usage and PSNR.

Trains a small VQPTTokenizer for a short while on generated moving-sprite videos (no downloads), then prints
what happens to one batch at every stage. Run: ``python examples/tokenizer_demo.py [--steps N] [--preset small]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import VQPTTokenizer, get_preset


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two videos in [0, 1]."""
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--steps", type=int, default=200, help="training steps on moving sprites")
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    args = parser.parse_args()
    torch.manual_seed(0)

    try:
        tokenizer = VQPTTokenizer.from_config(get_preset(args.preset, frame_size=args.size).tokenizer)
    except ValueError as err:  # e.g. a --size the preset's downsample factor does not divide
        parser.error(f"--size {args.size}: {err}")
    print(
        f"VQPTTokenizer ({args.preset}): {sum(p.numel() for p in tokenizer.parameters()) / 1e6:.2f}M parameters"
    )
    print(f"  {tokenizer.perceptual.status}")
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(1, args.steps + 1):
        out = tokenizer.loss(moving_sprites(4, 4, args.size, generator=g))
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
        if step % max(args.steps // 5, 1) == 0:
            print(
                f"  step {step:4d}  recon MSE {out['reconstruction'].item():.4f}  "
                f"usage/head {[round(u, 2) for u in out['usage'].tolist()]}  ({time.time() - start:.0f}s)"
            )

    tokenizer.eval()
    video = moving_sprites(2, 8, args.size, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        tokens, vq_loss, perplexity = tokenizer.encode(video)
        reconstructed = tokenizer.decode(tokens)
    print("\nvideo           ", tuple(video.shape), "float in [0, 1]")
    print("tokens          ", tuple(tokens.shape), tokens.dtype, f"ids in [0, {tokenizer.num_codes})")
    print("reconstructed   ", tuple(reconstructed.shape))
    # commitment + diversity: the diversity term (per-sample code entropy minus the entropy of the mean
    # assignment) is <= 0, so a tokenizer that uses its codes evenly can print a negative vq_loss
    print("vq_loss         ", round(vq_loss.item(), 4), "(commitment + diversity; can be < 0)")
    print("perplexity/head ", [round(p, 1) for p in perplexity.tolist()])
    used = [len(torch.unique(tokens[..., g])) / tokenizer.num_codes for g in range(tokenizer.num_quantizers)]
    print("code usage/head ", [round(u, 2) for u in used])
    print(f"PSNR            {psnr(reconstructed, video):.2f} dB")

    stream = tokenizer.stream(batch_size=2)
    with torch.no_grad():
        streamed = torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)
    print("streaming == offline tokens:", torch.equal(streamed, tokens))


if __name__ == "__main__":
    main()
