"""The seed's predictor demo: context tokens → future token prediction (MaskGIT and autoregressive).

Trains a tiny PerceiverTokenPredictor for a short while on generated sprite videos (no downloads) and prints the
shapes of every output, the next-frame token accuracy against "copy the last frame", and samples from both
generation methods. Run: ``python examples/predictor_demo.py [--steps N]``.
"""

from __future__ import annotations

import argparse

import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), dropout=0.0)
    predictor = model.predictor

    with (
        torch.no_grad()
    ):  # initialise the tokenizer's codebooks from data (a real run trains the tokenizer first)
        model.tokenizer.train().loss(moving_sprites(16, 8, 32, generator=g))
    optimizer = torch.optim.AdamW(predictor.trainable_parameters(), lr=1e-3)
    predictor.train()
    model.tokenizer.eval()
    for step in range(1, args.steps + 1):
        out = predictor(moving_sprites(8, 8, 32, generator=g), num_context_frames=5)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        if step % max(args.steps // 5, 1) == 0:
            print(
                f"step {step:4d}  loss {out['loss'].item():.3f}  masked-token accuracy {out['accuracy'].item():.3f}"
            )

    model.eval()
    videos = moving_sprites(2, 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = predictor(videos, num_context_frames=5)
        tokens = predictor.tokenize(videos)
    print("\nvideos            ", tuple(videos.shape))
    print("reconstructed     ", tuple(out["reconstructed"].shape), "(5 context frames + 3 predicted)")
    print("predicted_tokens  ", tuple(out["predicted_tokens"].shape))
    print("logits            ", tuple(out["logits"].shape))
    print(
        f"future-token accuracy {out['accuracy'].item():.3f}  vs copy-last "
        f"{(tokens[:, 5:] == tokens[:, 4:5]).float().mean().item():.3f}"
    )
    for method in ("maskgit", "autoregressive"):
        sample = model.generate(videos[:, :5], num_frames=3, method=method, steps=6)
        print(
            f"generate({method!r}): tokens {tuple(sample['tokens'].shape)}, frames {tuple(sample['frames'].shape)}"
        )


if __name__ == "__main__":
    main()
