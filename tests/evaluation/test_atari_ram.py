"""The RAM annotation table and the paper's categories."""

from __future__ import annotations

import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import atari_ram_labels, expand_ram_variables, game_name, paper_categories


def test_ram_table_and_categories():
    assert game_name("ALE/Pong-v5") == "pong" and game_name("BreakoutNoFrameskip-v4") == "breakout"
    assert game_name("ALE/MontezumaRevenge-v5") == "montezumarevenge" and game_name("CartPole-v1") is None
    pong_categories = {name: paper_categories(name) for name in expand_ram_variables("pong")}
    assert pong_categories == {
        "player_y": ("agent_localization",),
        "player_x": ("agent_localization",),
        "enemy_y": ("other_localization",),
        "enemy_x": ("other_localization",),
        "ball_x": ("small_object_localization",),
        "ball_y": ("small_object_localization",),
        "enemy_score": ("score_clock_lives_display",),
        "player_score": ("score_clock_lives_display",),
    }
    breakout = expand_ram_variables("breakout")
    assert breakout["block_bit_map_0"] == 0 and breakout["block_bit_map_29"] == 29 and len(breakout) == 35
    assert paper_categories("blocks_hit_count") == ("misc",)
    assert paper_categories("num_lives_direction") == ("score_clock_lives_display", "misc")
    with pytest.raises(ValueError, match="no RAM annotations"):
        atari_ram_labels("notagame")
