"""``local_motion_history``: the context model's training windows start the local motion encoder's history early."""

from __future__ import annotations

from aime_rl.perception import CausalPerceiverIO
from aime_rl.training.config import TrainerConfig
from aime_rl.training.perception import training_windows


def test_the_trainer_samples_windows_longer_by_the_motion_history(store_dir):
    model = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(6, 3, 16, 16), local_motion_frames=3, local_motion_history=True
    )
    config = TrainerConfig(batch_size=2, sequence_length=6, steps=1)
    batch = training_windows(model.predictor, store_dir, config, token_cache=None)[0]
    assert batch["frames"].shape[1] == 6 + 2
