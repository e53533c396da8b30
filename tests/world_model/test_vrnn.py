"""VRNN world model: shapes, causality, KL terms, bad input, save/load, streaming filter, training, open loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aime_rl  # noqa: F401  (registers aime_rl/Catch-v0)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayStore
from aime_rl.training import TrainerConfig
from aime_rl.utils.tensorboard import read_event_images
from aime_rl.world_model.env import VRNNFilter
from aime_rl.world_model.imagination import (
    WorldModelRolloutCallback,
    copy_last_psnr,
    imagine,
    log_open_loop,
    open_loop_rollout,
    psnr_per_step,
)
from aime_rl.world_model.training import train_world_model, world_model_loss
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import SMALL, collect_catch

GRID, HEADS, CODES = (8, 8), 2, 32  # the tiny preset's token grid, quantizer heads and codes


@pytest.fixture(scope="module")
def catch_store(tmp_path_factory) -> ReplayStore:
    return collect_catch(tmp_path_factory.mktemp("catch_replay"), episodes=20)


def random_inputs(batch: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, steps, 3, 64, 64), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, 3, (batch, steps), generator=g)
    rewards = torch.randn(batch, steps, generator=g)
    terminated = torch.rand(batch, steps, generator=g) < 0.2
    return frames, actions, rewards, terminated


def test_forward_shapes_and_loss_terms(perceiver):
    vrnn = VRNN(perceiver, 3, kl_samples=16, **SMALL)
    frames, actions, rewards, terminated = random_inputs(2, 5)
    out = vrnn(frames, actions, rewards, terminated)
    scalars = (
        "total",
        "frame_nll",
        "context_nll",
        "reward_loss",
        "continue_loss",
        "kl",
        "kl_loss",
        "stick_kl",
    )
    for name in (*scalars, "concentration_kl", "alpha", "active_components", "token_accuracy"):
        assert out[name].shape == () and torch.isfinite(out[name]), name
    assert out["kl"] >= -0.05  # MC estimate of a KL: non-negative up to noise
    assert out["kl_loss"] >= vrnn.config.free_nats - 1e-6  # free nats clamp
    assert out["stick_kl"] >= -1e-4
    assert 1 <= out["active_components"] <= SMALL["max_components"]
    states = out["states"]
    h, z, k = SMALL["hidden_dim"], SMALL["latent_dim"], SMALL["max_components"]
    for name, size in [("h_prev", h), ("h", h), ("z", z), ("post_mu", z), ("context", 32)]:
        assert states[name].shape == (2, 5, size), name
    assert states["token_logits"].shape == (2, 5, *GRID, HEADS, CODES)
    assert states["tokens"].shape == (2, 5, *GRID, HEADS)
    assert torch.allclose(states["pi"].sum(-1), torch.ones(2, 5), atol=1e-5)
    assert states["pi"].shape == (2, 5, k)
    out["total"].backward()
    grads = [p.grad for p in vrnn.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in perceiver.parameters())  # frozen: no gradient reaches it


def test_open_loop_loss_scores_prior_rollouts_from_every_step(perceiver):
    """``open_loop_steps=n``: the token cross-entropy of frames imagined from the filtered state after each step
    (prior mode, real actions), as an open-loop rollout would predict them; added to ``total``; 0 when off."""
    frames, actions, rewards, terminated = random_inputs(2, 5, seed=4)
    torch.manual_seed(0)
    vrnn = VRNN(perceiver, 3, open_loop_steps=2, open_loop_weight=0.5, **SMALL)
    plain = VRNN(perceiver, 3, **SMALL)
    plain.load_state_dict(vrnn.state_dict())
    tokens, context = vrnn.perceive(frames)
    outs = []
    for model in (vrnn, plain):
        torch.manual_seed(1)  # the MC KL draws from the global RNG
        noise = torch.Generator().manual_seed(0)
        outs.append(model(None, actions, rewards, terminated, context, tokens=tokens, generator=noise))
    out, out_plain = outs
    assert out_plain["open_loop_nll"] == 0
    torch.testing.assert_close(out["total"], out_plain["total"] + 0.5 * out["open_loop_nll"])

    # recompute it from the public one-step API: filter the first i+1 frames (same posterior noise), then imagine
    expected = []
    with torch.no_grad():
        for start in range(5 - 2):
            prefix = slice(0, start + 1)
            noise = torch.Generator().manual_seed(0)
            observed = vrnn.observe(
                tokens=tokens[:, prefix],
                context=context[:, prefix],
                actions=actions[:, prefix],
                generator=noise,
            )
            carry = observed["carry"]
            for j in (1, 2):
                state = vrnn.prior_step(carry, sample=False)
                logits = vrnn.predict_tokens(state.belief)
                expected.append(
                    torch.nn.functional.cross_entropy(
                        logits.reshape(-1, CODES), tokens[:, start + j].reshape(-1), reduction="sum"
                    )
                    / 2
                )
                carry = vrnn.transition(state, vrnn.encode_actions(actions[:, start + j], (2,)))
    torch.testing.assert_close(out["open_loop_nll"], torch.stack(expected).mean(), rtol=1e-5, atol=1e-4)

    out["open_loop_nll"].backward()
    for module in (vrnn.prior_components, vrnn.rnn, vrnn.frame_decoder, vrnn.context_decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    longer = VRNN(perceiver, 3, open_loop_steps=10, **SMALL)  # clipped to T - 1 steps
    assert torch.isfinite(
        longer(frames[:, :3], actions[:, :3], rewards[:, :3], terminated[:, :3])["open_loop_nll"]
    )
    with pytest.raises(ValueError, match="open_loop_steps"):
        VRNN(perceiver, 3, open_loop_steps=-1)


def test_perception_is_frozen_and_not_in_checkpoints(perceiver, tmp_path):
    vrnn = VRNN(perceiver, 3, **SMALL)
    param_ids = {id(p) for p in vrnn.parameters()}
    assert not any(id(p) in param_ids for p in perceiver.parameters())
    assert not any(key.startswith(("perceiver", "predictor", "tokenizer")) for key in vrnn.state_dict())
    vrnn.train()
    assert not perceiver.training
    frames, actions, *_ = random_inputs(1, 4, seed=1)
    tokens, context = vrnn.perceive(frames)
    torch.testing.assert_close(context, perceiver.extract_context(frames, window=16), rtol=0, atol=1e-5)
    assert torch.equal(tokens, perceiver.tokenizer.encode(frames)[0])

    vrnn.save_pretrained(tmp_path / "wm")
    loaded = VRNN.from_pretrained(tmp_path / "wm", perceiver)
    assert loaded.config == vrnn.config
    for key, value in vrnn.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    other = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(8, 3, 64, 64), base_channels=8, num_latent_channels=16
    )
    with pytest.raises(ValueError, match="context_dim"):
        VRNN.from_pretrained(tmp_path / "wm", other)


def test_causality(perceiver):
    """States at t do not change when frames or actions after t change."""
    vrnn = VRNN(perceiver, 3, **SMALL).eval()
    frames, actions, rewards, terminated = random_inputs(2, 6, seed=2)
    t = 2
    frames2, actions2 = frames.clone(), actions.clone()
    frames2[:, t + 1 :] = torch.randint(0, 256, frames2[:, t + 1 :].shape, dtype=torch.uint8)
    actions2[:, t + 1 :] = (actions2[:, t + 1 :] + 1) % 3
    with torch.no_grad():
        a = vrnn.observe(frames, actions, sample=False)
        b = vrnn.observe(frames2, actions2, sample=False)
        # training path, same noise
        fa = vrnn(frames, actions, rewards, terminated, generator=torch.Generator().manual_seed(0))["states"]
        fb = vrnn(frames2, actions2, rewards, terminated, generator=torch.Generator().manual_seed(0))[
            "states"
        ]
    for out_a, out_b in [(a, b), (fa, fb)]:
        for name in ("h_prev", "z", "post_mu", "post_log_sigma", "context", "h", "cell"):
            torch.testing.assert_close(out_a[name][:, : t + 1], out_b[name][:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(out_a["z"][:, t + 1], out_b["z"][:, t + 1])  # the changed frame matters
        assert not torch.allclose(
            out_a["h"][:, t + 1], out_b["h"][:, t + 1]
        )  # and so does the changed action
    torch.testing.assert_close(
        fa["token_logits"][:, : t + 1], fb["token_logits"][:, : t + 1], rtol=0, atol=1e-5
    )


# (vrnn, frames, actions, rewards, terminated) -> a call that must raise; ``vrnn`` has 3 discrete actions
BAD_INPUTS = {
    "actions-of-another-length": (lambda v, f, a, r, t: v(f, a[:, :3], r, t), "actions"),
    "float-discrete-actions": (lambda v, f, a, r, t: v(f, a.float(), r, t), "actions"),
    "action-ids-out-of-range": (lambda v, f, a, r, t: v(f, a + 3, r, t), "actions"),
    "no-actions": (lambda v, f, a, r, t: v(f, None, r, t), "actions"),
    "rewards-of-another-length": (lambda v, f, a, r, t: v(f, a, r[:, :2], t), "rewards"),
    "terminated-of-another-batch": (lambda v, f, a, r, t: v(f, a, r, t[:1]), "terminated"),
    "frames-of-another-size": (lambda v, f, a, r, t: v(f[:, :, :, :32], a, r, t), "frames"),
    "frames-of-another-rank": (lambda v, f, a, r, t: v(f[0], a, r, t), "frames"),
    "context-of-another-dim": (lambda v, f, a, r, t: v(f, a, r, t, context=torch.zeros(2, 4, 7)), "context"),
    "tokens-of-another-shape": (
        lambda v, f, a, r, t: v(None, a, tokens=torch.zeros(2, 4, 4, 4, 2, dtype=torch.long)),
        "tokens",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error(perceiver, case):
    call, match = BAD_INPUTS[case]
    vrnn = VRNN(perceiver, 3, **SMALL)
    frames, actions, rewards, terminated = random_inputs(2, 4)
    with pytest.raises(ValueError, match=match):
        call(vrnn, frames, actions, rewards, terminated)


def test_continuous_actions_of_another_dim_raise_value_error(perceiver):
    frames, _, rewards, terminated = random_inputs(2, 4)
    continuous = VRNN(perceiver, 2, discrete=False, **SMALL)
    with pytest.raises(ValueError, match="actions"):
        continuous(frames, torch.zeros(2, 4, 3), rewards, terminated)  # wrong action dim


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda perceiver: VRNN(perceiver, 3, hidden_size=8), "unknown VRNN option"),
        (
            lambda perceiver: VRNN(
                CausalPerceiverIO.from_preset("tiny", base_channels=8, temporal_downsample=True), 3
            ),
            "temporal_downsample",
        ),
    ],
    ids=["unknown-option", "temporal_downsample-perceiver"],
)
def test_bad_construction_raises_value_error(perceiver, build, match):
    with pytest.raises(ValueError, match=match):
        build(perceiver)


def test_continuous_actions(perceiver):
    vrnn = VRNN(perceiver, 2, discrete=False, **SMALL)
    frames, _, rewards, terminated = random_inputs(2, 3)
    out = vrnn(frames, torch.randn(2, 3, 2), rewards, terminated)
    assert torch.isfinite(out["total"])
    rolled = imagine(vrnn, out["states"]["last"], 4, actions=torch.randn(2, 4, 2))
    assert rolled["belief"].shape == (2, 4, vrnn.belief_dim) and rolled["reward"].shape == (2, 4)


def test_filter_matches_offline_observe(perceiver):
    """VRNNFilter, one frame per step with resets, equals the offline posterior (means)."""
    vrnn = VRNN(perceiver, 3, **SMALL).eval()
    frames, actions, *_ = random_inputs(2, 5, seed=3)
    with torch.no_grad():
        tokens, context = vrnn.perceive(frames)
        offline = vrnn.observe(tokens=tokens, context=context, actions=actions, sample=False)
    expected = torch.cat([offline["h_prev"], offline["z"]], -1)
    filt = VRNNFilter(vrnn, batch_size=2)
    for t in range(5):
        belief = filt.step(context[:, t], frames[:, t], actions[:, t - 1] if t else None)
        torch.testing.assert_close(belief, expected[:, t], rtol=0, atol=1e-5)
    # restart row 1: it then matches a fresh sequence starting at frame 0 of row 1
    filt.reset(torch.tensor([False, True]))
    restarted_frames = torch.stack([frames[0, 2], frames[1, 0]])
    restarted_context = vrnn.perceive(restarted_frames[:, None])[1][:, 0]  # row 0 ignored below
    belief = filt.step(torch.stack([context[0, 2], restarted_context[1]]), restarted_frames, actions[:, 4])
    torch.testing.assert_close(belief[1], expected[1, 0], rtol=0, atol=1e-5)
    # tokens or embeddings are accepted instead of frames
    filt2 = VRNNFilter(vrnn, batch_size=2)
    torch.testing.assert_close(filt2.step(context[:, 0], tokens[:, 0]), expected[:, 0], rtol=0, atol=1e-5)


def catch_windows(vrnn: VRNN, store: ReplayStore, count: int, length: int, seed: int):
    """``count`` windows of Catch replay with their (frozen) perception precomputed."""
    batch = store.sample_windows(count, length, np.random.default_rng(seed))
    tokens, context = vrnn.perceive(batch["frames"])
    return {**batch, "tokens": tokens, "context": context}


def test_training_lowers_the_loss(perceiver, catch_store):
    torch.manual_seed(0)
    vrnn = VRNN(perceiver, 3, **SMALL)
    data = catch_windows(vrnn, catch_store, count=24, length=8, seed=0)
    held_out = catch_windows(vrnn, catch_store, count=8, length=8, seed=1)
    keys = ("actions", "rewards", "terminated", "context", "tokens", "is_last")

    def loss_on(batch, generator_seed=0):
        args = {k: batch[k] for k in keys}
        return vrnn(None, **args, generator=torch.Generator().manual_seed(generator_seed))

    with torch.no_grad():
        before = loss_on(held_out)
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(120):
        rows = torch.from_numpy(rng.choice(24, size=8, replace=False))
        out = loss_on({k: data[k][rows] for k in keys})
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on(held_out)
    assert after["total"] < 0.75 * before["total"]
    assert after["frame_nll"] < 0.75 * before["frame_nll"]
    assert after["token_accuracy"] > before["token_accuracy"] + 0.1
    assert after["context_nll"] < 0.5 * before["context_nll"]


def test_open_loop_rollout_psnr_and_tensorboard(perceiver, catch_store, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    vrnn = VRNN(perceiver, 3, **SMALL).eval()
    batch = catch_store.sample_windows(2, 6, np.random.default_rng(0))
    rollout = open_loop_rollout(vrnn, batch["frames"], batch["actions"], observe_k=2, horizon=4)
    assert rollout["predicted"].shape == (2, 4, 3, 64, 64)
    assert rollout["model_frames"].shape == (2, 6, 3, 64, 64)
    assert rollout["predicted_tokens"].shape == (2, 4, *GRID, HEADS)
    frames = batch["frames"].float() / 255
    psnr = psnr_per_step(frames, frames)
    assert psnr.shape == (6,) and (psnr >= 99).all()  # identical frames: MSE floored at 1e-10
    baseline = copy_last_psnr(frames, 2, 4)
    assert baseline.shape == (4,)
    torch.testing.assert_close(baseline[0], psnr_per_step(frames[:, 2:3], frames[:, 1:2])[0])
    with pytest.raises(ValueError, match="actions"):
        open_loop_rollout(vrnn, batch["frames"], batch["actions"][:, :3], observe_k=2, horizon=4)

    writer = SummaryWriter(tmp_path / "tb")
    scalars = log_open_loop(writer, vrnn, batch["frames"], batch["actions"], 2, 4, global_step=7)
    writer.close()
    # horizon steps are 1-based: step_1 is the first imagined frame
    assert {f"psnr/step_{k}" for k in range(1, 5)} <= set(scalars)
    assert {f"copy_last_psnr/step_{k}" for k in range(1, 5)} <= set(scalars)
    assert "psnr/step_0" not in scalars and "psnr/step_5" not in scalars
    images = read_event_images(tmp_path / "tb")
    assert "rollout/open_loop" in images

    callback = WorldModelRolloutCallback(vrnn, catch_store.directory, every_n_steps=1, observe_k=2, horizon=3)
    assert set(callback.log_rollout()) >= {"psnr/mean", "copy_last_psnr/mean"}


def test_train_world_model_with_trainer(perceiver, catch_store, tmp_path):
    config = TrainerConfig(
        steps=3,
        batch_size=2,
        sequence_length=6,
        warmup_steps=1,
        eval_every=3,
        checkpoint_every=0,
        log_every=1,
    )
    vrnn = train_world_model(
        catch_store.directory, perceiver, config, tmp_path / "run", dict(SMALL, action_dim=3)
    )
    assert isinstance(vrnn, VRNN) and vrnn.config.action_dim == 3
    assert [step for step, _ in vrnn.eval_history] == [3]
    assert "psnr/step_1" in vrnn.eval_history[0][1]
    reloaded = VRNN.from_pretrained(tmp_path / "run" / "world_model", perceiver)
    assert reloaded.config == vrnn.config
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("step_*/model.safetensors"))
    assert checkpoint.stat().st_size < 2 * sum(v.numel() * 4 for v in vrnn.state_dict().values())
    batch = catch_store.sample_windows(2, 4, np.random.default_rng(0))
    out = world_model_loss(vrnn, batch)
    assert "states" not in out and torch.isfinite(out["total"])


def test_perceive_equals_the_perception_models_context_with_the_motion_bias():
    torch.manual_seed(0)
    perceiver = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(8, 3, 64, 64), base_channels=8, motion_attention_bias=2.0
    ).eval()
    vrnn = VRNN(perceiver, 3, **SMALL)
    frames = torch.zeros(2, 5, 3, 64, 64, dtype=torch.uint8)
    for t in range(5):  # a square that moves right over a black background
        frames[:, t, :, 8:16, 8 * t : 8 * t + 8] = 255
    _, context = vrnn.perceive(frames)
    with torch.no_grad():
        expected = perceiver.extract_context(frames, window=vrnn.config.context_window)
    torch.testing.assert_close(context, expected, atol=1e-5, rtol=0)
