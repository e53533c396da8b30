"""``probe_model`` end to end on Catch and Pong, and the labels an env has by default."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import (
    PAPER_REFERENCE,
    ProbeConfig,
    ProbeReport,
    cartpole_labels,
    catch_labels,
    default_label_fn,
    probe_model,
)
from tests.evaluation.helpers import FAST, WINDOW, pong, short_catch


def test_default_labels_by_env():
    assert default_label_fn(short_catch()) is catch_labels
    env = pong()
    assert default_label_fn(env).game == "pong"
    env.close()
    assert default_label_fn(gym.make("CartPole-v1")) is cartpole_labels
    with pytest.raises(ValueError, match="label_fn"):
        default_label_fn(gym.make("Pendulum-v1"))


def test_probe_model_on_catch(model_dir, vrnn, tmp_path):
    report = probe_model(
        model_dir,
        lambda: gym.make("aime_rl/Catch-v0", balls_per_episode=2),
        steps=300,
        window=WINDOW,
        world_model=vrnn,
        seed=0,
        config=FAST,
        logdir=tmp_path / "tb",
    )
    expected = ("context", "untrained", "random_cnn", "pixels", "frame_stack", "majority", "belief")
    assert tuple(report.representations) == expected
    assert report.representations["belief"].dim == 32 + vrnn.belief_dim
    assert set(report.variables) == {"ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"}
    for result in report.representations.values():
        assert all(v.metric == "r2" and v.score <= 1.0 for v in result.variables.values())
        assert np.isfinite(result.score)
    # raw pixels locate the paddle almost perfectly (a sanity check on the whole pipeline)
    assert report.score("pixels", "paddle_x") > 0.8
    assert report.split["train_episodes"] + report.split["val_episodes"] + report.split["test_episodes"] >= 8

    loaded = ProbeReport.from_json(report.to_json(tmp_path / "report.json"))
    assert loaded.scores() == pytest.approx(report.scores())
    assert "| context |" in report.to_markdown()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "probe/context/ball_x" in tags and "probe_score/belief" in tags
    assert events.Scalars("probe/pixels/paddle_x")[0].value == pytest.approx(
        report.score("pixels", "paddle_x")
    )


def test_probe_model_on_pong(model, pong_data):
    config = ProbeConfig(lr=0.01, batch_size=64, max_epochs=8, patience=3)
    report = probe_model(
        model,
        pong,
        steps=300,
        window=WINDOW,
        representations=("context", "random_cnn", "majority"),
        max_episode_steps=60,
        config=config,
    )
    assert report.game == "pong" and report.num_episodes == 5
    assert "ball_x" in report.variables and "player_score" in report.dropped  # 0 all along: entropy 0
    for result in report.representations.values():
        assert all(v.metric == "f1" and 0.0 <= v.score <= 1.0 for v in result.variables.values())
        assert set(result.category_scores) <= {
            "agent_localization",
            "small_object_localization",
            "other_localization",
            "score_clock_lives_display",
        }
    text = report.to_markdown()
    assert "MAJ-CLF" in text and f"{PAPER_REFERENCE['pong']['ST-DIM']:.3f}" in text
    # the same data passed in gives the same report
    again = probe_model(
        model,
        None,
        data=pong_data,
        window=WINDOW,
        representations=("context", "random_cnn", "majority"),
        config=config,
    )
    assert again.scores() == pytest.approx(report.scores())
