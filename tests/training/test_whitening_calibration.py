"""``train_context_model`` calibrates the context whitening on replay windows once training is done."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.training import TrainerConfig
from aime_rl.training.perception import calibrate_whitening, train_context_model
from aime_rl.training.token_cache import build_token_cache
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


def test_calibration_from_cached_tokens_equals_calibration_from_frames(store_dir, tmp_path):
    model = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(4, 3, 32, 32), context_whitening=True, use_3d_conv=False
    )
    build_token_cache(store_dir, model.tokenizer, tmp_path / "cache")
    counted = calibrate_whitening(model.predictor, store_dir, config(), 2, num_contexts=64)
    from_frames = {k: v.clone() for k, v in model.predictor.whitening.state_dict().items()}
    cached = calibrate_whitening(
        model.predictor, store_dir, config(), 2, num_contexts=64, token_cache=tmp_path / "cache"
    )
    assert cached == counted
    for key, value in model.predictor.whitening.state_dict().items():
        torch.testing.assert_close(value, from_frames[key], rtol=1e-4, atol=1e-5, msg=key)


def test_training_from_a_token_cache_calibrates_from_it(store_dir, tmp_path):
    # a causal 3D tokenizer: a window cut from mid-episode and tokenized alone starts differently from the cache,
    # which holds the tokens the agent's stream sees, so the two calibrations differ
    model = whitened_model()
    assert model.tokenizer.config.use_3d_conv
    cache = tmp_path / "cache"
    train_context_model(
        model,
        store_dir,
        config(),
        tmp_path / "run",
        token_cache=cache,
        context_window=2,
        calibration_contexts=64,
    )
    trained = {k: v.clone() for k, v in model.predictor.whitening.state_dict().items()}
    calibrate_whitening(model.predictor, store_dir, config(), 2, num_contexts=64, token_cache=cache)
    assert all(torch.equal(v, trained[k]) for k, v in model.predictor.whitening.state_dict().items())
    calibrate_whitening(model.predictor, store_dir, config(), 2, num_contexts=64)
    assert not torch.equal(
        model.predictor.whitening.state_dict()["fast.running_mean"], trained["fast.running_mean"]
    )


def test_a_model_that_reads_the_frames_refuses_calibration_from_tokens(store_dir):
    model = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(4, 3, 32, 32), context_whitening=True, motion_attention_bias=1.0
    )
    tokens = torch.zeros(1, 4, 4, 4, model.tokenizer.num_quantizers, dtype=torch.long)
    with pytest.raises(ValueError, match="read motion from the frames"):
        model.predictor.calibrate_whitening([tokens], 2, tokens=True)
