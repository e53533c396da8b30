"""``train_context_model`` calibrates the context whitening on replay windows once training is done."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.training import TrainerConfig
from aime_rl.training.perception import calibrate_whitening, train_context_model
from tests.helpers import collect_catch


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return collect_catch(tmp_path_factory.mktemp("catch"), episodes=4, size=32, balls_per_episode=3).directory


def config(**overrides) -> TrainerConfig:
    settings = dict(
        steps=1, batch_size=2, sequence_length=4, warmup_steps=1, eval_every=0, checkpoint_every=0
    )
    return TrainerConfig(**{**settings, "holdout_fraction": 0.25, **overrides})


def whitened_model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(4, 3, 32, 32), context_whitening=True)


def test_training_ends_with_the_statistics_of_the_final_weights(store_dir, tmp_path):
    model = whitened_model()
    train_context_model(
        model, store_dir, config(), tmp_path / "run", context_window=2, calibration_contexts=64
    )
    after_training = {k: v.clone() for k, v in model.predictor.whitening.state_dict().items()}
    assert after_training["fast.num_batches"].item() == 1  # one batch of 16 windows of 4 × 2 frames
    assert calibrate_whitening(model.predictor, store_dir, config(), 2, num_contexts=64) == 16 * 8
    for key, value in model.predictor.whitening.state_dict().items():
        assert torch.equal(value, after_training[key]), key  # the same windows, the same weights


def test_the_calibration_windows_are_four_context_windows_long(store_dir):
    model = whitened_model()
    counted = calibrate_whitening(model.predictor, store_dir, config(), 3, num_contexts=10, batch_size=2)
    assert counted == 2 * 12  # one batch of 2 windows of 4 × 3 frames


def test_windows_longer_than_every_episode_fall_back_to_the_training_length(store_dir):
    model = whitened_model()
    counted = calibrate_whitening(model.predictor, store_dir, config(), 50, num_contexts=8, batch_size=2)
    assert counted == 2 * 4  # 3 balls at 32×32 are about 20 frames: windows of sequence_length 4


def test_a_model_without_whitening_is_not_calibrated(store_dir):
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(4, 3, 32, 32))
    assert calibrate_whitening(model.predictor, store_dir, config(), 2) == 0
