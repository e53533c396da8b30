"""``frozen_embeddings``: the input adapter (code embeddings, grid positions) is not trained.

That table is what the encoder reads every cell as, the decoder's query embedding and, tied, what every predicted
token is scored against; with the flag the context-model training leaves it as drawn and trains the rest.
"""

from __future__ import annotations

import torch

from aime_rl.training.optim import make_optimizer
from tests.perception.helpers import load_without_predictor_key, tiny

CONTEXT_FRAMES = 4


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.predictor.input_adapter.state_dict().items()}


def train_steps(model, clip, params, steps: int = 3) -> None:
    """A few AdamW steps (with weight decay) of the predictor's training loss on ``clip``."""
    optimizer = make_optimizer(model.predictor, lr=1e-2, weight_decay=0.1, params=params)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.predictor(clip[:, :6], CONTEXT_FRAMES, reconstruct=False).loss.backward()
        optimizer.step()


def changed(before: dict[str, torch.Tensor], model) -> list[str]:
    after = model.predictor.input_adapter.state_dict()
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_training_leaves_the_frozen_embeddings_as_drawn(clip):
    model = tiny(frozen_embeddings=True)
    before, latents = adapter_state(model), model.predictor.encoder.latents.detach().clone()
    train_steps(model, clip, model.predictor.trainable_parameters())
    assert changed(before, model) == []
    assert not torch.equal(model.predictor.encoder.latents, latents)  # the rest trains


def test_without_the_flag_the_embeddings_train(clip):
    model = tiny()
    before = adapter_state(model)
    train_steps(model, clip, model.predictor.trainable_parameters())
    assert sorted(changed(before, model)) == ["embeddings", "position.bias", "position.weight"]


def test_an_optimiser_over_every_parameter_leaves_them_out_too(clip):
    # the context-model Trainer's optimiser takes every parameter that requires a gradient
    model = tiny(frozen_embeddings=True)
    model.tokenizer.requires_grad_(False)  # as train_context_model does
    before = adapter_state(model)
    train_steps(model, clip, None)
    assert changed(before, model) == []


def test_the_flag_changes_training_only_not_the_model():
    torch.manual_seed(0)
    plain = tiny()
    torch.manual_seed(0)
    frozen = tiny(frozen_embeddings=True)
    video = torch.rand(2, 6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.extract_context(video), frozen.extract_context(video))


def test_the_flag_survives_a_checkpoint(tmp_path):
    tiny(frozen_embeddings=True).save_pretrained(tmp_path / "model")
    loaded = type(tiny()).from_pretrained(tmp_path / "model")
    assert loaded.config.predictor.frozen_embeddings
    assert not any(p.requires_grad for p in loaded.predictor.input_adapter.parameters())


def test_a_checkpoint_from_before_the_flag_loads_with_trained_embeddings(tmp_path):
    loaded = load_without_predictor_key(tmp_path, "frozen_embeddings")
    assert not loaded.config.predictor.frozen_embeddings
    assert all(p.requires_grad for p in loaded.predictor.input_adapter.parameters())
