"""Catch: a fast 64×64 pixel environment where acting well needs motion from several frames.

Balls fall one after another from the top of the screen, each drifting sideways at its own speed and bouncing off
the side walls. The agent moves a paddle along the bottom row and scores +1 for every ball it catches and −1 for
every ball it misses. A single frame shows where the ball *is* but not where it is *going*: its horizontal and
vertical speeds are hidden, so a good policy must infer them from the motion over a few frames and move the paddle
to where the ball will land. Many balls drift faster than the paddle moves, so chasing the ball's current column
loses them; heading for the landing column catches them.

Two observation types share the same dynamics and the same ``render()`` frame:

- ``obs_type="pixels"``: ``Box(0, 255, (size, size, 3), uint8)``, the frame itself.
- ``obs_type="state"``: ``Box(float32, (5,))``, the true low-dimensional state
  ``[ball_x, ball_y, ball_vx, ball_vy, paddle_x]`` (positions in ``[0, 1]`` of the screen, ``ball_vx`` in
  ``[-1, 1]`` of the top drift speed, ``ball_vy`` in ``(0, 1]`` of the top fall speed).

Rendering is pure numpy: a precomputed background and ball sprite are copied and sliced into a fresh frame each
step, so one CPU core runs tens of thousands of steps per second.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

BACKGROUND_RGB = (12, 14, 32)
BALL_RGB = (250, 210, 60)
PADDLE_RGB = (80, 200, 255)

ACTION_LEFT, ACTION_STAY, ACTION_RIGHT = 0, 1, 2
STATE_FIELDS = ("ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x")


def _disk_sprite(radius: int, color: tuple[int, int, int], background: tuple[int, int, int]) -> np.ndarray:
    """A ball drawn on the background colour: uint8 ``[2r+1, 2r+1, 3]``."""
    offsets = np.arange(-radius, radius + 1)
    inside = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2 + radius
    sprite = np.empty((2 * radius + 1, 2 * radius + 1, 3), dtype=np.uint8)
    sprite[...] = background
    sprite[inside] = color
    return sprite


class CatchEnv(gym.Env):
    """Catch falling, drifting balls with a paddle; the balls' velocities are hidden in a single frame.

    Actions: ``Discrete(3)``: 0 moves the paddle left, 1 keeps it still, 2 moves it right (``paddle_speed``
    pixels). Reward: +1 per caught ball, −1 per missed ball, 0 otherwise. An episode is ``balls_per_episode`` balls;
    it terminates when the last one lands (11–16 steps per ball with the defaults, about 135 steps in all).

    Each ball spawns at a uniform column at the top, with a fall speed uniform in ``fall_speed_range`` and a
    horizontal speed uniform in ``drift_speed_range`` with a random sign; it bounces off the side walls. The paddle
    keeps its position from ball to ball.

    Args:
        obs_type: ``"pixels"`` (uint8 ``[size, size, 3]``) or ``"state"`` (float32 ``[5]``, see module docstring).
        render_mode: ``None`` or ``"rgb_array"``; ``render()`` returns the uint8 ``[size, size, 3]`` frame in
            either case (so state-based envs can still be observed from pixels).
        size: side of the square frame in pixels.
        paddle_width: paddle width in pixels.
        paddle_speed: pixels the paddle moves per left/right action.
        ball_radius: ball radius in pixels (the sprite is ``2r+1`` wide).
        fall_speed_range: ``(low, high)`` vertical ball speed in pixels per step.
        drift_speed_range: ``(low, high)`` horizontal ball speed (magnitude) in pixels per step.
        balls_per_episode: balls dropped per episode.

    ``reset(options={"ball_velocity": (vx, vy)})`` pins the first ball's velocity (pixels per step, ``vy > 0``);
    with the same seed, two such resets give the same first frame and different motions.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        obs_type: str = "pixels",
        render_mode: str | None = None,
        size: int = 64,
        paddle_width: int = 12,
        paddle_speed: float = 5.0,
        ball_radius: int = 2,
        fall_speed_range: tuple[float, float] = (3.5, 5.0),
        drift_speed_range: tuple[float, float] = (3.0, 8.0),
        balls_per_episode: int = 10,
    ) -> None:
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.size = int(size)
        self.paddle_width = int(paddle_width)
        self.paddle_speed = float(paddle_speed)
        self.ball_radius = int(ball_radius)
        self.fall_speed_range = (float(fall_speed_range[0]), float(fall_speed_range[1]))
        self.drift_speed_range = (float(drift_speed_range[0]), float(drift_speed_range[1]))
        self.balls_per_episode = int(balls_per_episode)
        self._check_settings()

        self.paddle_height = 3
        self.paddle_top = self.size - self.paddle_height - 1
        # Row of the ball's centre when its bottom touches the paddle's top.
        self.landing_y = float(self.paddle_top - self.ball_radius - 1)
        self.spawn_y = float(self.ball_radius)
        self.ball_x_bounds = (float(self.ball_radius), float(self.size - 1 - self.ball_radius))
        self.paddle_x_bounds = (self.paddle_width / 2, self.size - self.paddle_width / 2)

        self._background = np.empty((self.size, self.size, 3), dtype=np.uint8)
        self._background[...] = BACKGROUND_RGB
        self._ball_sprite = _disk_sprite(self.ball_radius, BALL_RGB, BACKGROUND_RGB)
        self._paddle_rgb = np.array(PADDLE_RGB, dtype=np.uint8)

        self.action_space = spaces.Discrete(3)
        if obs_type == "pixels":
            self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), dtype=np.uint8)
        else:
            low = np.array([0.0, 0.0, -1.0, 0.0, 0.0], dtype=np.float32)
            high = np.ones(5, dtype=np.float32)
            self.observation_space = spaces.Box(low, high, dtype=np.float32)

        self.ball_x = self.ball_y = self.ball_vx = self.ball_vy = 0.0
        self.paddle_x = self.size / 2
        self.balls_left = 0

    # ----------------------------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: paddle centred, first ball at the top. Returns ``(observation, info)``."""
        super().reset(seed=seed)
        self.paddle_x = self.size / 2
        self.balls_left = self.balls_per_episode
        self._spawn_ball()
        velocity = (options or {}).get("ball_velocity")
        if velocity is not None:
            self._pin_ball_velocity(velocity)
        return self._observation(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the paddle, then the ball; score when the ball reaches the paddle row.

        Returns ``(observation, reward, terminated, truncated, info)``; ``truncated`` is always False here (the
        registered ids add a ``TimeLimit``). After a landing the next ball is already in the returned frame.
        """
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (left), 1 (stay) or 2 (right), got {action!r}")
        self._move_paddle(int(action))
        self._move_ball()

        reward, terminated = 0.0, False
        if self.ball_y >= self.landing_y:
            self.ball_y = self.landing_y
            reward = 1.0 if self._paddle_covers(self.ball_x) else -1.0
            self.balls_left -= 1
            if self.balls_left > 0:
                self._spawn_ball()
            else:
                terminated = True
        info = self._info()
        if reward:
            info["caught"] = reward > 0
        return self._observation(), reward, terminated, False, info

    def render(self) -> np.ndarray:
        """The current frame: a fresh uint8 ``[size, size, 3]`` array (whatever ``render_mode`` is)."""
        frame = self._background.copy()
        r = self.ball_radius
        row, col = round(self.ball_y), round(self.ball_x)
        frame[row - r : row + r + 1, col - r : col + r + 1] = self._ball_sprite
        left = round(self.paddle_x - self.paddle_width / 2)
        frame[self.paddle_top : self.paddle_top + self.paddle_height, left : left + self.paddle_width] = (
            self._paddle_rgb
        )
        return frame

    # ----------------------------------------------------------------------------------------- true state
    def state_vector(self) -> np.ndarray:
        """The true normalised state, float32 ``[5]``: ``ball_x, ball_y, ball_vx, ball_vy, paddle_x``."""
        extent = float(self.size - 1)
        return np.array(
            [
                self.ball_x / extent,
                self.ball_y / extent,
                self.ball_vx / self.drift_speed_range[1],
                self.ball_vy / self.fall_speed_range[1],
                self.paddle_x / extent,
            ],
            dtype=np.float32,
        )

    def predicted_landing_x(self) -> float:
        """Column (pixels) where the current ball's centre will be when it reaches the paddle row."""
        steps_to_land = int(np.ceil((self.landing_y - self.ball_y) / self.ball_vy))
        low_x, high_x = self.ball_x_bounds
        span = high_x - low_x
        unfolded = (self.ball_x - low_x + steps_to_land * self.ball_vx) % (2 * span)  # wall bounces unfold
        return low_x + (unfolded if unfolded <= span else 2 * span - unfolded)

    def oracle_action(self) -> int:
        """The action of a policy that knows the true state: move towards the predicted landing column."""
        return self._action_towards(self.predicted_landing_x())

    def chaser_action(self) -> int:
        """A velocity-blind baseline: move towards the ball's current column (all that one frame shows)."""
        return self._action_towards(self.ball_x)

    # ------------------------------------------------------------------------------------------ internals
    def _spawn_ball(self) -> None:
        """Place a new ball at the top with a random column, fall speed and drift (speed and direction)."""
        rng = self.np_random
        self.ball_x = float(rng.uniform(*self.ball_x_bounds))
        self.ball_y = self.spawn_y
        self.ball_vy = float(rng.uniform(*self.fall_speed_range))
        direction = 1.0 if rng.random() < 0.5 else -1.0
        self.ball_vx = direction * float(rng.uniform(*self.drift_speed_range))

    def _pin_ball_velocity(self, velocity: Any) -> None:
        """Set the current ball's ``(vx, vy)`` in pixels per step (the ``reset`` option ``ball_velocity``)."""
        try:
            vx, vy = (float(v) for v in velocity)
        except (TypeError, ValueError) as error:
            raise ValueError(f"options['ball_velocity'] must be a pair (vx, vy), got {velocity!r}") from error
        if not (0 < vy <= self.fall_speed_range[1] and abs(vx) <= self.drift_speed_range[1]):
            raise ValueError(
                f"options['ball_velocity'] must have 0 < vy <= {self.fall_speed_range[1]} and "
                f"|vx| <= {self.drift_speed_range[1]}, got {velocity!r}"
            )
        self.ball_vx, self.ball_vy = vx, vy

    def _move_ball(self) -> None:
        """Advance the ball one step, reflecting it off the side walls."""
        low_x, high_x = self.ball_x_bounds
        self.ball_x += self.ball_vx
        if self.ball_x < low_x:
            self.ball_x, self.ball_vx = 2 * low_x - self.ball_x, -self.ball_vx
        elif self.ball_x > high_x:
            self.ball_x, self.ball_vx = 2 * high_x - self.ball_x, -self.ball_vx
        self.ball_y += self.ball_vy

    def _move_paddle(self, action: int) -> None:
        self.paddle_x += (action - ACTION_STAY) * self.paddle_speed
        self.paddle_x = min(max(self.paddle_x, self.paddle_x_bounds[0]), self.paddle_x_bounds[1])

    def _action_towards(self, column: float) -> int:
        gap = column - self.paddle_x
        if abs(gap) <= self.paddle_speed / 2:
            return ACTION_STAY
        return ACTION_RIGHT if gap > 0 else ACTION_LEFT

    def _paddle_covers(self, ball_x: float) -> bool:
        """Whether a ball centred at ``ball_x`` touches the paddle (overlap of drawn extents)."""
        return abs(ball_x - self.paddle_x) <= self.paddle_width / 2 + self.ball_radius

    def _check_settings(self) -> None:
        """Raise ``ValueError`` naming the first bad constructor argument."""
        if self.obs_type not in ("pixels", "state"):
            raise ValueError(f"obs_type must be 'pixels' or 'state', got {self.obs_type!r}")
        if self.render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {self.render_mode!r}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        if not 1 <= self.paddle_width <= self.size // 2:
            raise ValueError(
                f"paddle_width must be in [1, size // 2 = {self.size // 2}], got {self.paddle_width}"
            )
        if self.paddle_speed <= 0:
            raise ValueError(f"paddle_speed must be positive, got {self.paddle_speed}")
        if not 0 <= self.ball_radius <= self.size // 8:
            raise ValueError(
                f"ball_radius must be in [0, size // 8 = {self.size // 8}], got {self.ball_radius}"
            )
        low, high = self.fall_speed_range
        if not 0 < low <= high:
            raise ValueError(f"fall_speed_range must satisfy 0 < low <= high, got {self.fall_speed_range}")
        low, high = self.drift_speed_range
        widest = self.size - 2 * self.ball_radius - 1
        if not (0 <= low <= high and 0 < high < widest):
            raise ValueError(
                f"drift_speed_range must satisfy 0 <= low <= high and 0 < high < {widest} "
                f"(size - 2 * ball_radius - 1), got {self.drift_speed_range}"
            )
        if self.balls_per_episode < 1:
            raise ValueError(f"balls_per_episode must be at least 1, got {self.balls_per_episode}")

    def _observation(self) -> np.ndarray:
        return self.render() if self.obs_type == "pixels" else self.state_vector()

    def _info(self) -> dict[str, Any]:
        return {"balls_left": self.balls_left}
