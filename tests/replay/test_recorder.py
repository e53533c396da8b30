"""Replay recorders: the Gymnasium wrapper RecordFrames and the SB3 VecEnvWrapper VecRecordFrames."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

from aime_rl.replay import RecordFrames, ReplayStore, VecRecordFrames, resize_frames
from tests.replay.helpers import PaintedEnv, check_recorded_episode


def test_record_frames_gymnasium_wrapper(tmp_path):
    env = RecordFrames(PaintedEnv(lengths=(3, 5, 2)), tmp_path, chunk_length=4)
    rng = np.random.default_rng(0)
    taken = []
    for _ in range(3):
        env.reset()
        actions, done = [], False
        while not done:
            actions.append(int(rng.integers(4)))
            _, _, terminated, truncated, _ = env.step(actions[-1])
            done = terminated or truncated
        taken.append(actions)
    env.reset()
    env.step(1)
    env.step(2)
    env.close()  # cut mid-episode: stored as truncated

    store = ReplayStore.open(tmp_path)
    assert len(store) == 4 and all(e.complete for e in store.episodes)
    for number, (episode, steps) in enumerate(zip(store.episodes[:3], (3, 5, 2), strict=True)):
        check_recorded_episode(episode, steps, number, tag=0, actions=taken[number])
    check_recorded_episode(store.episodes[3], 2, 3, tag=0, actions=[1, 2], cut=True)


def test_record_frames_from_render_resizes(tmp_path):
    env = RecordFrames(PaintedEnv(lengths=(4,), size=48, image_obs=False, render_mode="rgb_array"), tmp_path)
    assert env.frame_source == "render"
    env.reset()
    for action in range(4):
        env.step(action)
    (episode,) = ReplayStore.open(tmp_path).episodes
    assert episode.frames().shape == (5, 64, 64, 3)
    check_recorded_episode(episode, 4, 0, tag=0, actions=[0, 1, 2, 3])
    assert resize_frames(np.full((2, 30, 40, 3), 77, np.uint8), (64, 64)).shape == (2, 64, 64, 3)


class VecMeanPixel(VecEnvWrapper):
    """Stands in for a context wrapper above the recorder: turns frames into vectors (terminal ones too)."""

    def __init__(self, venv):
        super().__init__(venv, observation_space=gym.spaces.Box(0, 255, (3,), np.float32))

    def reset(self):
        return self.venv.reset().mean(axis=(1, 2)).astype(np.float32)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = (
                    info["terminal_observation"].mean(axis=(0, 1)).astype(np.float32)
                )
        return obs.mean(axis=(1, 2)).astype(np.float32), rewards, dones, infos


def test_vec_record_frames_handles_same_step_autoreset_under_another_wrapper(tmp_path):
    factories = [lambda: PaintedEnv(lengths=(3, 4), tag=0), lambda: PaintedEnv(lengths=(5,), tag=1)]
    recorder = VecRecordFrames(DummyVecEnv(factories), tmp_path, chunk_length=4)
    venv = VecMeanPixel(recorder)
    assert venv.reset().shape == (2, 3)
    rng = np.random.default_rng(0)
    actions = rng.integers(4, size=(14, 2))
    for step_actions in actions:
        obs, _, _, _ = venv.step(step_actions)
        assert obs.shape == (2, 3)  # the wrapper above still sees its own observations
    venv.close()

    store = ReplayStore.open(tmp_path)
    assert not store.recovery_report
    by_env = {0: [], 1: []}
    for episode in store.episodes:
        by_env[int(episode.frames(0, 1)[0, 0, 0, 2])].append(episode)
    # env 0: episodes of 3, 4, 3, 4 steps fill the 14 steps exactly (the 5th, empty one is dropped)
    offsets = np.cumsum([0, 3, 4, 3])
    for number, (episode, steps) in enumerate(zip(by_env[0], (3, 4, 3, 4), strict=True)):
        own = actions[offsets[number] : offsets[number] + steps, 0]
        check_recorded_episode(episode, steps, number, tag=0, actions=own)
    assert len(by_env[0]) == 4
    # env 1: two episodes of 5 steps (terminal frames from terminal_observation), then 4 steps cut by close()
    check_recorded_episode(by_env[1][0], 5, 0, tag=1, actions=actions[0:5, 1])
    check_recorded_episode(by_env[1][1], 5, 1, tag=1, actions=actions[5:10, 1])
    check_recorded_episode(by_env[1][2], 4, 2, tag=1, actions=actions[10:14, 1], cut=True)
    assert len(by_env[1]) == 3


def test_vec_record_frames_rejects_non_image_observations(tmp_path):
    venv = DummyVecEnv([lambda: PaintedEnv(image_obs=False)])
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        VecRecordFrames(venv, tmp_path)
