"""Training an action-conditioned context model: the trainer's loss tells it the actions of its windows."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayWindowDataset
from aime_rl.training import TrainerConfig
from aime_rl.training.perception import predictor_loss_fn, train_context_model
from tests.helpers import collect_catch


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return collect_catch(tmp_path_factory.mktemp("catch"), episodes=4, size=32, balls_per_episode=3).directory


def conditioned_model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset(
        "tiny", video_shape=(4, 3, 32, 32), action_conditioning=True, num_actions=3, use_3d_conv=False
    )


def window_batch(store_dir) -> dict:
    return ReplayWindowDataset(store_dir, batch_size=4, length=4, seed=1)[0]


def test_the_loss_is_the_model_told_its_windows_actions(store_dir):
    model = conditioned_model().eval()  # eval: every future position masked, so the loss is deterministic
    batch = window_batch(store_dir)
    assert len(batch["actions"].unique()) > 1  # a random policy's actions
    frames = batch["frames"].float() / 255
    with torch.no_grad():
        loss = predictor_loss_fn(2)(model.predictor, batch)["total"]
        told = model.predictor(frames, 2, reconstruct=False, actions=batch["actions"]).loss
        other = model.predictor(frames, 2, reconstruct=False, actions=(batch["actions"] + 1) % 3).loss
    assert torch.equal(loss, told) and not torch.equal(loss, other)


def test_a_batch_without_actions_is_refused(store_dir):
    batch = {k: v for k, v in window_batch(store_dir).items() if k != "actions"}
    with pytest.raises(ValueError, match="windows with their actions"):
        predictor_loss_fn(2)(conditioned_model().predictor, batch)


def test_the_context_model_trains_its_action_embeddings_from_the_token_cache(store_dir, tmp_path):
    model = conditioned_model()
    before = model.predictor.action_embedding.weight.detach().clone()
    config = TrainerConfig(
        steps=2, batch_size=2, sequence_length=4, warmup_steps=1, eval_every=0, checkpoint_every=0
    )
    train_context_model(model, store_dir, config, tmp_path / "run", token_cache=tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()
    assert not torch.equal(model.predictor.action_embedding.weight[:3], before[:3])
