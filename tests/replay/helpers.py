"""Builders of the replay tests: painted frames that encode (row, episode tag), stores of such episodes, an env
whose frames show (step, episode, tag)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from aime_rl.replay import ReplayStore

SMALL = (8, 8, 3)


def painted_frames(rows: int, tag: int, shape=SMALL) -> np.ndarray:
    """uint8 [rows, H, W, 3]: red = row % 256, green = tag, blue = row // 256."""
    frames = np.zeros((rows, *shape), dtype=np.uint8)
    frames[..., 0] = (np.arange(rows) % 256)[:, None, None]
    frames[..., 1] = tag
    frames[..., 2] = (np.arange(rows) // 256)[:, None, None]
    return frames


def encoded_episode(steps: int, tag: int, shape=SMALL) -> dict[str, np.ndarray]:
    """An episode whose frames and actions encode (tag, step); terminated on the last step."""
    return {
        "frames": painted_frames(steps + 1, tag, shape),
        "actions": tag * 1000 + np.arange(steps),
        "rewards": np.arange(steps, dtype=np.float32) + 0.5,
        "terminated": np.arange(steps) == steps - 1,
        "truncated": np.zeros(steps, dtype=bool),
    }


def write_encoded_store(directory, steps_per_episode, chunk_length=1000) -> ReplayStore:
    store = ReplayStore(directory, frame_shape=SMALL, chunk_length=chunk_length)
    for tag, steps in enumerate(steps_per_episode):
        store.add_episode(**encoded_episode(steps, tag))
    return store


def decode_rows(frames_chw) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, tags) from painted frames [..., 3, H, W]."""
    frames = np.asarray(frames_chw)
    rows = frames[..., 0, 0, 0].astype(np.int64) + 256 * frames[..., 2, 0, 0].astype(np.int64)
    return rows, frames[..., 1, 0, 0].astype(np.int64)


class PaintedEnv(gym.Env):
    """Pixel env whose frames show (step, episode number, env tag); even episodes terminate, odd ones truncate."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, lengths=(3, 5), tag=0, size=64, image_obs=True, render_mode=None):
        self.lengths, self.tag, self.size, self.render_mode = lengths, tag, size, render_mode
        if image_obs:
            self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.image_obs = image_obs
        self.episode, self.t = -1, 0

    def _frame(self):
        frame = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = self.t, self.episode, self.tag
        return frame

    def _obs(self):
        return self._frame() if self.image_obs else np.zeros(2, np.float32)

    def render(self):
        return self._frame()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.lengths[self.episode % len(self.lengths)]
        terminated = done and self.episode % 2 == 0
        return self._obs(), float(self.t), terminated, done and not terminated, {}


def check_recorded_episode(episode, steps, episode_number, tag, actions, cut=False):
    """Frames show steps 0..steps of one env episode; final row has a dummy action and the ending flags."""
    frames = episode.frames()
    assert len(episode) == steps + 1 and episode.complete and episode.has_final_observation
    np.testing.assert_array_equal(frames[:, 0, 0, 0], np.arange(steps + 1))
    assert (frames[..., 1] == episode_number).all() and (frames[..., 2] == tag).all()
    np.testing.assert_array_equal(episode.actions, [*actions, 0])
    np.testing.assert_array_equal(episode.rewards, [*range(1, steps + 1), 0])
    ended_by_termination = episode_number % 2 == 0 and not cut
    expected_end = np.arange(steps + 1) >= steps - 1
    np.testing.assert_array_equal(episode.terminated, expected_end & ended_by_termination)
    np.testing.assert_array_equal(episode.truncated, expected_end & (not ended_by_termination))
