"""World-model quality on the built-in env (issue 6): on held-out Catch episodes, the VRNN's open-loop prediction
beats the "copy the last observed frame" baseline.

The recipe, about a minute on one CPU thread:

1. random-policy Catch episodes at 32×32 (:data:`CATCH_32`: the 64×64 game at half scale, a 3×3 ball) into a
   replay store, and held-out episodes from other seeds into a second one;
2. the "small" preset's tokenizer (per-frame 2D convs behind a 2×2 patchify stem, 4 heads) with 32 codes per head
   instead of 128 (the VRNN's frame head is then cheap, at the same reconstruction PSNR), no codebook diversity
   loss and no LPIPS, trained with the library's :func:`~aime_rl.training.perception.train_tokenizer`; the
   Perceiver stays untrained (its context is still a deterministic causal feature of the frames). With the
   diversity loss (weight 0.1) the tokens of unchanged background cells flip between near-duplicate codes from
   frame to frame, and for some seeds the VRNN then never learns to move the paddle with the actions;
3. a VRNN with the open-loop loss (``open_loop_steps``) trained with the library's ``Trainer`` on replay windows
   whose tokens and context are computed once (the perception is frozen, so that equals recomputing them);
4. on held-out windows, :func:`open_loop_rollout` observes 4 frames and imagines 4 with the real actions; the mean
   PSNR of the decoded frames is compared with :func:`copy_last_psnr`, and the tokenizer's own encode→decode PSNR
   (the ceiling of any decoded prediction) is checked to be well above both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aime_rl.envs.catch import BALL_RGB
from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayStore
from aime_rl.training import TrainerConfig
from aime_rl.training.perception import train_tokenizer
from aime_rl.training.trainer import Trainer
from aime_rl.world_model.imagination import copy_last_psnr, open_loop_rollout, psnr_per_step
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import collect_catch

CATCH_32 = dict(
    size=32,
    paddle_width=6,
    paddle_speed=2.5,
    ball_radius=1,
    fall_speed_range=(1.75, 2.5),
    drift_speed_range=(1.5, 4.0),
    balls_per_episode=3,
)
OBSERVE, HORIZON = 4, 4
# 32×32 frames → 8×8 tokens × 4 heads
# foreground_weight=0, stability_weight=0, motion_attention_bias=0: the thresholds below were calibrated on the
# plain-MSE tokenizer and the seed's Perceiver (the world model is under test, not the "small" preset's extra terms)
TOKENIZER = dict(
    num_codes=32,
    downsample=4,
    diversity_weight=0.0,
    perceptual_weight=0.0,
    foreground_weight=0.0,
    stability_weight=0.0,
    motion_attention_bias=0.0,
)
VRNN_KWARGS = dict(
    hidden_dim=128,
    latent_dim=16,
    embed_dim=128,
    mlp_dim=128,
    decoder_channels=32,
    max_components=6,
    open_loop_steps=2,
)
TOKENIZER_STEPS, WORLD_MODEL_STEPS = 600, 400
WINDOW, POOL, BATCH = 8, 256, 16
KEYS = ("actions", "rewards", "terminated", "is_last", "tokens", "context")


def train_perception(store: ReplayStore, logdir: Path, seed: int) -> CausalPerceiverIO:
    torch.manual_seed(seed)
    perceiver = CausalPerceiverIO.from_preset("small", video_shape=(WINDOW, 3, 32, 32), **TOKENIZER)
    config = TrainerConfig(
        steps=TOKENIZER_STEPS,
        batch_size=8,
        sequence_length=4,
        lr=2e-3,
        warmup_steps=20,
        log_every=100,
        eval_every=0,
        checkpoint_every=0,
        keep_last=1,
        holdout_fraction=0.0,
        seed=seed,
    )
    train_tokenizer(perceiver.tokenizer, store.directory, config, logdir)
    return perceiver.eval()


def perceived_windows(vrnn: VRNN, store: ReplayStore, seed: int) -> dict[str, torch.Tensor]:
    """``POOL`` training windows with their frozen perception (tokens, context) computed once."""
    windows = store.sample_windows(POOL, WINDOW, np.random.default_rng(seed))
    with torch.no_grad():
        tokens, context = zip(*(vrnn.perceive(f) for f in windows["frames"].split(64)), strict=True)
    return {**windows, "tokens": torch.cat(tokens), "context": torch.cat(context)}


def cached_perception_loss(model: VRNN, batch: dict) -> dict:
    """``Trainer`` loss: the VRNN's losses on a batch of windows with precomputed ``tokens`` and ``context``."""
    actions, rewards, terminated, context = (
        batch[k] for k in ("actions", "rewards", "terminated", "context")
    )
    out = model(None, actions, rewards, terminated, context, tokens=batch["tokens"], is_last=batch["is_last"])
    out.pop("states")
    return out


def train_vrnn(perceiver: CausalPerceiverIO, store: ReplayStore, logdir: Path, seed: int) -> VRNN:
    torch.manual_seed(seed)
    vrnn = VRNN(perceiver, 3, **VRNN_KWARGS)
    pool = perceived_windows(vrnn, store, seed)

    def batches(stream_seed: int, rank: int, start_step: int):
        rng = np.random.default_rng([stream_seed, rank, start_step])
        while True:
            rows = torch.from_numpy(rng.choice(POOL, size=BATCH, replace=False))
            yield {key: pool[key][rows] for key in KEYS}

    config = TrainerConfig(
        steps=WORLD_MODEL_STEPS,
        batch_size=BATCH,
        sequence_length=WINDOW,
        lr=3e-3,
        warmup_steps=20,
        log_every=100,
        eval_every=0,
        checkpoint_every=0,
        keep_last=1,
        seed=seed,
    )
    Trainer(vrnn, cached_perception_loss, config, logdir, batches).fit()
    return vrnn.eval()


def open_loop_scores(tmp_path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Train everything for ``seed``; per-step PSNR ``[HORIZON]`` of the model, copy-last, and the tokenizer."""
    train = collect_catch(tmp_path / "train", episodes=20, seed=1000 * seed, **CATCH_32)
    held_out = collect_catch(tmp_path / "held_out", episodes=8, seed=1000 * seed + 100_000, **CATCH_32)
    perceiver = train_perception(train, tmp_path / "tokenizer", seed)
    vrnn = train_vrnn(perceiver, train, tmp_path / "world_model", seed)
    batch = held_out.sample_windows(48, OBSERVE + HORIZON, np.random.default_rng(seed + 1))
    ball_pixels = (batch["frames"] == torch.tensor(BALL_RGB, dtype=torch.uint8).view(3, 1, 1)).all(2)
    assert (ball_pixels.sum((-2, -1)) == 9).all()  # the 3×3 ball is in every frame at this size
    frames = batch["frames"].float() / 255
    predicted = torch.cat(
        [
            open_loop_rollout(vrnn, f, a, OBSERVE, HORIZON)["predicted"]
            for f, a in zip(frames.split(16), batch["actions"].split(16), strict=True)
        ]
    )
    truth = frames[:, OBSERVE:]
    return {
        "model": psnr_per_step(truth, predicted),
        "copy_last": copy_last_psnr(frames, OBSERVE, HORIZON),
        "tokenizer": psnr_per_step(truth, vrnn.decode_tokens(vrnn.tokenize(frames))[:, OBSERVE:]),
    }


@pytest.mark.slow
def test_open_loop_psnr_over_4_steps_beats_copying_the_last_frame(tmp_path):
    scores = open_loop_scores(tmp_path, seed=0)
    model, copy_last, ceiling = (scores[k].mean().item() for k in ("model", "copy_last", "tokenizer"))
    report = f"model {model:.2f} dB, copy-last {copy_last:.2f} dB, tokenizer ceiling {ceiling:.2f} dB"
    # measured over seeds 0-7: margin 2.3-4.1 dB (seed 0: 3.6), tokenizer ceiling 7.2-9.3 dB above copy-last
    assert ceiling > copy_last + 5, report  # the tokenizer is not what limits the prediction
    assert model > copy_last + 1.0, report
