"""Progress that survives ``nohup`` and SLURM: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time

from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm


class Progress:
    """Count ``total`` units of work named ``what``.

    On a terminal (stderr is a TTY) this is a tqdm bar with rate and ETA. Otherwise it prints a line such as
    ``train-agent: 5000/20000 steps (25%), 850 steps/s, ETA 18 s`` every ``every_fraction`` of the work (and at
    most every ``min_seconds``), so logs of unattended runs show where the run is.
    """

    def __init__(
        self,
        total: int,
        what: str,
        unit: str = "steps",
        enabled: bool = True,
        every_fraction: float = 0.1,
        min_seconds: float = 5.0,
    ):
        self.total, self.what, self.unit, self.enabled = total, what, unit, enabled
        self.done = 0
        self.start = time.monotonic()
        self.every = max(int(total * every_fraction), 1)
        self.min_seconds = min_seconds
        self.next_line, self.last_line_time = self.every, self.start
        self.bar = (
            tqdm(total=total, desc=what, unit=unit.rstrip("s")) if enabled and sys.stderr.isatty() else None
        )

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.done >= self.next_line and (
            now - self.last_line_time >= self.min_seconds or self.done >= self.total
        ):
            self.next_line = self.done + self.every
            self.last_line_time = now
            print(self.line(now), flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (
            max(self.total - self.done, 0) / rate if rate > 0 else float("inf")
        )  # PPO ends a rollout past total
        percent = 100 * self.done / max(self.total, 1)
        return (
            f"{self.what}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), {rate:.0f} {self.unit}/s, "
            f"ETA {eta:.0f} s"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class AgentProgress(BaseCallback):
    """SB3 callback that reports env steps through :class:`Progress`."""

    def __init__(self, total: int, what: str = "train-agent", enabled: bool = True):
        super().__init__()
        self.progress = Progress(total, what, enabled=enabled)

    def _on_step(self) -> bool:
        self.progress.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.progress.close()
