"""Progress lines of unattended runs."""

from __future__ import annotations

from aime_rl.pipeline.progress import Progress


def test_work_past_the_total_shows_no_negative_eta():
    progress = Progress(100, "train-agent", enabled=False)  # PPO's last rollout can end past the step budget
    progress.update(128)
    assert progress.line().endswith("ETA 0 s")
