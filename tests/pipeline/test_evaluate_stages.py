"""The evaluate stage's envs: every episode of a short evaluation runs at once, never more envs than ``num_envs``."""

from __future__ import annotations

import pytest

from aime_rl.pipeline import RunConfig
from aime_rl.pipeline.evaluate_stages import evaluation_envs


@pytest.mark.parametrize(("num_envs", "episodes", "envs"), [(8, 16, 8), (16, 16, 16), (8, 3, 3), (1, 10, 1)])
def test_the_evaluation_runs_its_episodes_on_at_most_num_envs_envs(num_envs, episodes, envs):
    assert evaluation_envs(RunConfig(num_envs=num_envs, eval_episodes=episodes)) == envs
