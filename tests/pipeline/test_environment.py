"""The run's env: an env whose frames come from ``render()`` observes them, so no episode loses its last frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aime_rl.pipeline import RunConfig, RunDir
from aime_rl.pipeline.collect_stage import collect
from aime_rl.pipeline.environment import make_venv
from aime_rl.replay import ReplayStore


@pytest.fixture
def cartpole_config(tmp_path) -> RunConfig:
    return RunConfig(
        name="cartpole",
        runs_dir=str(tmp_path),
        env="cartpole_pixels",
        preset="tiny",
        frame_size=32,
        num_envs=2,
    )


def test_a_rendered_env_gives_its_terminal_frame(cartpole_config):
    venv = make_venv(cartpole_config, 2, seed=0)
    observations = venv.reset()
    assert observations.shape == (2, 400, 600, 3) and observations.dtype == np.uint8
    dones = np.zeros(2, dtype=bool)
    for _ in range(100):  # pushing right topples the pole within a few dozen steps
        observations, _, dones, infos = venv.step(np.ones(2, dtype=np.int64))
        if dones.any():
            break
    venv.close()
    i = int(np.flatnonzero(dones)[0])
    terminal = infos[i]["terminal_observation"]
    assert terminal.shape == (400, 600, 3) and terminal.dtype == np.uint8
    assert not np.array_equal(
        terminal, observations[i]
    )  # the fallen pole, not the next episode's first frame


def test_collect_keeps_the_last_frame_of_rendered_episodes(cartpole_config):
    run = RunDir(cartpole_config.run_dir)
    collect(dataclasses.replace(cartpole_config, collect_steps=80), run, progress=False)
    finished = [episode for episode in ReplayStore.open(run.path / "replay").episodes if episode.complete]
    assert finished and all(episode.has_final_observation for episode in finished)
