"""Trainer: loss falls, exact resume, NaN/inf guard, TensorBoard scalars, checkpoints; per-step replay batches."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from aime_rl.perception import VQPTTokenizer
from aime_rl.replay import ReplayWindowDataset
from aime_rl.training import Trainer, TrainerConfig, scalar_metrics, warmup_cosine


class TinyAutoencoder(nn.Module):
    """Per-frame conv autoencoder with dropout (uses the torch RNG) and BatchNorm (buffers)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1))
        self.decoder = nn.ConvTranspose2d(8, 3, 4, 2, 1)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 ``[B, T, 3, H, W]`` → losses."""
        x = frames.flatten(0, 1).float() / 255
        error = (self.decoder(self.encoder(x)) - x).pow(2)
        return {"total": error.mean(), "reconstruction": error.mean(), "per_channel": error.mean((0, 2, 3))}


def autoencoder_loss(model: nn.Module, batch) -> dict:
    return model(batch["frames"])


def make_config(**overrides) -> TrainerConfig:
    settings = dict(
        steps=12,
        batch_size=4,
        sequence_length=3,
        lr=1e-2,
        warmup_steps=3,
        log_every=1,
        eval_every=0,
        checkpoint_every=5,
        keep_last=2,
        holdout_fraction=0.0,
    )
    return TrainerConfig(**{**settings, **overrides})


def make_trainer(logdir, store_dir, config: TrainerConfig, loss_fn=autoencoder_loss, **kwargs) -> Trainer:
    torch.manual_seed(123)  # same initial weights in every run
    return Trainer(
        TinyAutoencoder(),
        loss_fn,
        config,
        logdir,
        ReplayWindowDataset.from_config(store_dir, config, subset="all"),
        **{"progress": False, **kwargs},
    )


def scalars(logdir, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def parameters_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


# ------------------------------------------------------------------------------------------------- training


def test_loss_falls_and_scalars_reach_tensorboard(tmp_path, store_dir):
    config = make_config(steps=30, checkpoint_every=0)
    summary = make_trainer(tmp_path, store_dir, config).fit()

    losses = [value for _, value in scalars(tmp_path, "train/total")]
    assert len(losses) == 30
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert summary["step"] == 30 and summary["bad_steps"] == 0
    assert math.isclose(summary["total"], losses[-1], rel_tol=1e-6)
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"]
    for tag in ("reconstruction", "per_channel/0", "per_channel/2", "lr", "grad_norm", "bad_steps"):
        assert f"train/{tag}" in tags
    lrs = [value for _, value in scalars(tmp_path, "train/lr")]
    assert lrs[0] == pytest.approx(1e-2 / 3) and lrs[2] == pytest.approx(1e-2) and lrs[-1] < 1e-3


def test_checkpoints_are_written_and_pruned(tmp_path, store_dir):
    trainer = make_trainer(tmp_path, store_dir, make_config())
    trainer.fit()
    assert [p.name for p in trainer.checkpoints.checkpoints()] == ["step_00000010", "step_00000012"]
    config = trainer.checkpoints.read_config(trainer.checkpoints.latest_path())
    assert config["trainer"]["steps"] == 12 and config["world_size"] == 1


def test_resume_after_stop_is_exact(tmp_path, store_dir):
    config = make_config()
    uninterrupted = make_trainer(tmp_path / "a", store_dir, config)
    uninterrupted.fit()

    first = make_trainer(tmp_path / "b", store_dir, config)
    first.fit(stop_at=7)  # writes checkpoints at 5 and 7
    assert first.step == 7
    second = make_trainer(tmp_path / "b", store_dir, config)  # a new process would build a new trainer
    second.fit()
    assert second.step == 12

    expected = parameters_of(uninterrupted)
    for name, tensor in parameters_of(second).items():
        assert torch.equal(tensor, expected[name]), name
    # TensorBoard holds one value per step, no duplicates from the restart
    assert [step for step, _ in scalars(tmp_path / "b", "train/total")] == list(range(1, 13))


def test_resume_keeps_this_machines_optimiser_kind(tmp_path, store_dir):
    config = make_config()
    first = make_trainer(tmp_path, store_dir, config)
    for group in first.optimizer.param_groups:
        group["fused"] = not first.optimizer.defaults[
            "fused"
        ]  # as if saved by a machine that chose otherwise
    first.fit(stop_at=5)
    second = make_trainer(tmp_path, store_dir, config)
    second.fit()
    assert all(g["fused"] == second.optimizer.defaults["fused"] for g in second.optimizer.param_groups)


def test_resume_after_crash_restarts_from_last_checkpoint(tmp_path, store_dir):
    config = make_config()
    uninterrupted = make_trainer(tmp_path / "a", store_dir, config)
    uninterrupted.fit()

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # killed during step 8; the checkpoint of step 5 is the newest
        return autoencoder_loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "b", store_dir, config, loss_fn=crashing_loss).fit()
    resumed = make_trainer(tmp_path / "b", store_dir, config)
    assert resumed.resume() == 5
    resumed.fit()

    expected = parameters_of(uninterrupted)
    for name, tensor in parameters_of(resumed).items():
        assert torch.equal(tensor, expected[name]), name


def test_tokenizer_trains_and_logs_per_head_metrics(tmp_path, store_dir):
    config = make_config(steps=1, batch_size=2, sequence_length=2, checkpoint_every=0)
    torch.manual_seed(0)
    model = VQPTTokenizer(code_dim=16, num_codes=8, base_channels=8, num_quantizers=2, perceptual_weight=0.0)
    batches = ReplayWindowDataset.from_config(store_dir, config, subset="all")
    trainer = Trainer(model, lambda m, b: m(b["frames"]), config, tmp_path, batches, progress=False)
    trainer.fit()
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"]
    assert {"train/total", "train/reconstruction", "train/perplexity/1", "train/usage/0"} <= set(tags)
    assert not any(tag.startswith(("train/tokens", "train/reconstructed")) for tag in tags)
    state = trainer.checkpoints.read_config(trainer.checkpoints.latest_path())
    assert state["model"]["class"] == "VQPTTokenizer" and state["model"]["num_codes"] == 8


def test_eval_fn_runs_periodically_in_eval_mode(tmp_path, store_dir):
    seen = []

    def eval_fn(model, step, writer):
        assert not model.training and not torch.is_grad_enabled()
        writer.add_scalar("eval/marker", float(step), step)
        seen.append(step)

    trainer = make_trainer(tmp_path, store_dir, make_config(steps=7, eval_every=3), eval_fn=eval_fn)
    trainer.fit()
    assert seen == [3, 6, 7]
    assert trainer.model.training
    assert [step for step, _ in scalars(tmp_path, "eval/marker")] == [3, 6, 7]


# ------------------------------------------------------------------------------------------------- NaN guard


def test_non_finite_steps_are_skipped_and_counted(tmp_path, store_dir):
    config = make_config(steps=10, max_bad_steps=3)
    trainer = make_trainer(tmp_path, store_dir, config)
    batches = ReplayWindowDataset.from_config(store_dir, config, subset="all").batches()
    model = trainer.model
    weight = model.decoder.weight

    def nan_loss(m, batch):
        out = m(batch["frames"])
        return {**out, "total": out["total"] * float("nan")}

    def inf_gradient_loss(m, batch):  # finite loss, infinite gradient: d sqrt(u)/du at u = 0
        out = m(batch["frames"])
        return {**out, "total": out["total"] + torch.sqrt(weight.sum() - weight.sum().detach())}

    trainer.train_step(next(batches))
    before = parameters_of(trainer)
    optimizer_step = trainer.optimizer.state[weight]["step"].clone()
    for bad_loss in (nan_loss, inf_gradient_loss):
        trainer.loss_fn = bad_loss
        out = trainer.train_step(next(batches))
        assert out["skipped"]
    after = parameters_of(trainer)
    for name in ("decoder.weight", "decoder.bias", "encoder.0.weight"):
        assert torch.equal(after[name], before[name]), name
    assert torch.equal(trainer.optimizer.state[weight]["step"], optimizer_step)
    assert trainer.bad_steps == 2 and trainer.consecutive_bad_steps == 2 and trainer.step == 3

    trainer.loss_fn = autoencoder_loss
    assert not trainer.train_step(next(batches))["skipped"]
    assert trainer.consecutive_bad_steps == 0 and trainer.bad_steps == 2


def test_too_many_consecutive_bad_steps_raise(tmp_path, store_dir):
    def always_nan(model, batch):
        out = model(batch["frames"])
        return {**out, "total": out["total"] * float("nan")}

    trainer = make_trainer(tmp_path, store_dir, make_config(max_bad_steps=3), loss_fn=always_nan)
    with pytest.raises(RuntimeError, match="3 consecutive"):
        trainer.fit()
    assert trainer.bad_steps == 3


def test_loss_without_total_is_rejected(tmp_path, store_dir):
    trainer = make_trainer(tmp_path, store_dir, make_config(), loss_fn=lambda m, b: {"loss": m(b["frames"])})
    with pytest.raises(TypeError, match="total"):
        trainer.fit()


# ------------------------------------------------------------------------------------------------- data and helpers


def test_trainer_draws_the_dataset_batch_of_each_step_also_after_resume(tmp_path, store_dir):
    config = make_config(steps=6, seed=3, checkpoint_every=0)
    seen: list[tuple[list[int], list[int]]] = []

    def recording_loss(model, batch):
        seen.append((batch["episode_index"].tolist(), batch["start"].tolist()))
        return autoencoder_loss(model, batch)

    def run(num_workers: int, stop_at: int | None = None) -> None:
        # seed=0 here: the trainer draws with its own config.seed (and rank / world size)
        dataset = ReplayWindowDataset(store_dir, 4, 3, seed=0, num_workers=num_workers)
        Trainer(TinyAutoencoder(), recording_loss, config, tmp_path, dataset, progress=False).fit(stop_at)

    run(num_workers=0, stop_at=2)
    run(num_workers=2)  # resumes at step 2, batches now computed by two DataLoader workers
    expected = ReplayWindowDataset(store_dir, 4, 3, seed=3)
    assert seen == [tuple(a.tolist() for a in expected.window_starts(step)) for step in range(6)]


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0, 0, 10) == pytest.approx(1.0)


def test_scalar_metrics_flattens_vectors_and_skips_the_rest():
    metrics = scalar_metrics(
        {
            "total": torch.tensor(1.5),
            "usage": torch.tensor([0.25, 0.5]),
            "lr": 0.1,
            "enabled": True,
            "reconstructed": torch.zeros(2, 3, 4),
            "mask": torch.tensor(True),
            "name": "text",
        }
    )
    assert metrics == {"total": 1.5, "usage/0": 0.25, "usage/1": 0.5, "lr": 0.1}


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(steps=0, batch_size=1, sequence_length=1), "steps"),
        (dict(steps=1, batch_size=1, sequence_length=1, holdout_fraction=1.5), "holdout_fraction"),
    ],
    ids=["zero-steps", "holdout_fraction-above-one"],
)
def test_config_is_validated(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainerConfig(**settings)


def test_progress_bar_shows_rate_and_loss_only_when_asked(tmp_path, store_dir, capsys):
    config = make_config(steps=3, checkpoint_every=0)
    make_trainer(tmp_path / "quiet", store_dir, config, progress=None).fit()  # stderr is not a terminal here
    assert "train" not in capsys.readouterr().err
    make_trainer(tmp_path / "loud", store_dir, config, progress=True).fit()
    err = capsys.readouterr().err
    assert "3/3" in err and "step/s" in err and "loss=" in err


def test_a_new_learning_rate_on_resume_is_applied_and_logged(tmp_path, store_dir, caplog):
    first = make_trainer(tmp_path, store_dir, make_config())
    first.fit(stop_at=7)
    resumed = make_trainer(tmp_path, store_dir, make_config(lr=first.config.lr * 10))
    with caplog.at_level("WARNING"):
        resumed.resume()
    assert "instead of the checkpoint's" in caplog.text
    factor = warmup_cosine(7, resumed.config.warmup_steps, resumed.config.steps)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(resumed.config.lr * factor)
    resumed.fit()
    assert resumed.scheduler.base_lrs == [resumed.config.lr] * len(resumed.optimizer.param_groups)


def test_a_new_learning_rate_on_resume_keeps_each_groups_lr_scale(tmp_path, store_dir):
    def scaled_trainer(config: TrainerConfig) -> Trainer:
        torch.manual_seed(123)
        model = TinyAutoencoder()
        model.decoder.lr_scale = 3.0
        windows = ReplayWindowDataset.from_config(store_dir, config, subset="all")
        return Trainer(model, autoencoder_loss, config, tmp_path, windows)

    scaled_trainer(make_config()).fit(stop_at=7)
    resumed = scaled_trainer(make_config(lr=0.1))
    resumed.resume()
    peaks = {
        group["lr_scale"]: base
        for group, base in zip(resumed.optimizer.param_groups, resumed.scheduler.base_lrs, strict=True)
    }
    assert peaks == {1.0: pytest.approx(0.1), 3.0: pytest.approx(0.3)}


# ------------------------------------------------------------------------------------------------- signals


def signalling_loss(number: int, at_call: int, times: int = 1):
    """A loss that sends this process ``number`` during its ``at_call``-th call (``times`` times)."""
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            for _ in range(times):
                os.kill(os.getpid(), number)
        return autoencoder_loss(model, batch)

    return loss


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_checkpoints_it_and_the_rerun_resumes_exactly(tmp_path, store_dir, number):
    config = make_config(
        checkpoint_every=0
    )  # no periodic checkpoint: without the stop's own, 7 steps are lost
    uninterrupted = make_trainer(tmp_path / "a", store_dir, config)
    uninterrupted.fit()

    stopped = make_trainer(tmp_path / "b", store_dir, config, loss_fn=signalling_loss(number, at_call=7))
    with pytest.raises(KeyboardInterrupt, match="after step 7: checkpoint saved"):
        stopped.fit()
    assert [p.name for p in stopped.checkpoints.checkpoints()] == ["step_00000007"]
    resumed = make_trainer(tmp_path / "b", store_dir, config)
    resumed.fit()
    assert resumed.step == 12
    expected = parameters_of(uninterrupted)
    for name, tensor in parameters_of(resumed).items():
        assert torch.equal(tensor, expected[name]), name


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path, store_dir):
    config = make_config(checkpoint_every=0)
    trainer = make_trainer(
        tmp_path, store_dir, config, loss_fn=signalling_loss(signal.SIGINT, at_call=3, times=2)
    )
    with pytest.raises(KeyboardInterrupt, match="SIGINT again"):
        trainer.fit()
    assert trainer.checkpoints.checkpoints() == []


def test_fit_gives_the_signal_handlers_back(tmp_path, store_dir):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    make_trainer(tmp_path, store_dir, make_config(steps=2)).fit()
    with pytest.raises(KeyboardInterrupt):
        make_trainer(
            tmp_path / "b", store_dir, make_config(), loss_fn=signalling_loss(signal.SIGTERM, 2)
        ).fit()
    assert {number: signal.getsignal(number) for number in before} == before


def test_a_resumed_fit_says_where_it_resumes(tmp_path, store_dir, capsys):
    config = make_config()
    make_trainer(tmp_path, store_dir, config).fit(stop_at=5)
    capsys.readouterr()
    make_trainer(tmp_path, store_dir, config).fit()
    assert "resuming from step 5 of 12" in capsys.readouterr().err
