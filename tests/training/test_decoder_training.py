"""The tokenizer's decoder trained alone on frozen codes: the tokens stay, the reconstructions improve."""

from __future__ import annotations

import torch

from aime_rl.perception import VQPTTokenizer
from aime_rl.replay import ReplayWindowDataset
from aime_rl.training import TrainerConfig, train_tokenizer, train_tokenizer_decoder
from aime_rl.training.perception import as_unit_float


def config(steps: int) -> TrainerConfig:
    return TrainerConfig(
        steps=steps,
        batch_size=4,
        sequence_length=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=0,
        checkpoint_every=0,
    )


def trained_tokenizer(store_dir, logdir) -> VQPTTokenizer:
    torch.manual_seed(0)
    tokenizer = VQPTTokenizer(
        code_dim=16,
        num_codes=8,
        base_channels=8,
        num_quantizers=2,
        perceptual_weight=0.0,
        foreground_weight=3.0,
    )
    train_tokenizer(tokenizer, store_dir, config(6), logdir)
    return tokenizer


def frames_of(store_dir) -> torch.Tensor:
    return ReplayWindowDataset(store_dir, 8, 4, seed=5, subset="all")[0]["frames"]


def state_outside_the_decoder(tokenizer: VQPTTokenizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tokenizer.state_dict().items() if not k.startswith("decoder.")}


def reconstruction_error(tokenizer: VQPTTokenizer, frames: torch.Tensor) -> float:
    with torch.no_grad():
        video = as_unit_float(frames)
        return float((tokenizer.decode(tokenizer.encode(video).tokens) - video).square().mean())


def test_decoder_training_keeps_every_token_and_lowers_the_reconstruction_error(store_dir, tmp_path):
    tokenizer = trained_tokenizer(store_dir, tmp_path / "tokenizer")
    frames = frames_of(store_dir)
    tokens, error = tokenizer.encode(frames).tokens, reconstruction_error(tokenizer, frames)
    frozen = state_outside_the_decoder(tokenizer)
    decoder = {k: v.clone() for k, v in tokenizer.decoder.state_dict().items()}

    metrics = train_tokenizer_decoder(tokenizer, store_dir, config(40), tmp_path / "decoder")

    assert torch.equal(tokenizer.encode(frames).tokens, tokens)
    assert all(torch.equal(v, frozen[k]) for k, v in state_outside_the_decoder(tokenizer).items())
    assert any(not torch.equal(v, decoder[k]) for k, v in tokenizer.decoder.state_dict().items())
    assert reconstruction_error(tokenizer, frames) < 0.9 * error
    assert {"psnr", "foreground_psnr"} <= set(metrics)


def test_decoder_training_leaves_the_tokenizer_trainable_as_before(store_dir, tmp_path):
    tokenizer = trained_tokenizer(store_dir, tmp_path / "tokenizer")
    tokenizer.quantizer.requires_grad_(False)  # whatever the caller had set stays set
    before = {name: p.requires_grad for name, p in tokenizer.named_parameters()}
    train_tokenizer_decoder(tokenizer, store_dir, config(2), tmp_path / "decoder")
    assert {name: p.requires_grad for name, p in tokenizer.named_parameters()} == before
