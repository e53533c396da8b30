"""The AtariARI RAM annotations as data: which RAM byte holds which state variable, and its category.

``RAM_ANNOTATIONS`` maps an ALE game (lower-case, no separators: ``"pong"``, ``"montezumarevenge"``) to its
variables: ``name -> RAM index`` (0–127), or a tuple of indices for a multi-byte variable, which becomes one
variable per byte, ``name_0, name_1, …`` (as in the paper). The addresses are facts from Anand et al. 2019,
"Unsupervised State Representation Learning in Atari" (mila-iqia/atari-representation-learning,
``atariari/benchmark/ram_annotations.py``). Adding a game is one entry::

    RAM_ANNOTATIONS["mygame"] = dict(player_x=12, player_y=13, score=(40, 41))

Categories follow the paper's naming rules (:func:`paper_categories`): a name with ``_x``, ``_y``, ``_z`` or
``_column`` is a localization, of the agent (``player``/``agent``), of a small object (``ball``/``missile``), or
of another object; ``score``/``clock``/``lives``/``meter``/``display`` names are
``score_clock_lives_display``; ``count``/``bit_map``/``existence``/``level``/``room``/``game_state``/``direction``
names are ``misc``. A name may fall in two categories (Asteroids' ``num_lives_direction``) or in none (Q*bert's
``tile_color_*``: probed and reported, outside the per-game score, as in the paper). ``CATEGORY_OVERRIDES``
replaces the rule for single variables when a name misleads it.
"""

from __future__ import annotations

import re

__all__ = [
    "CATEGORIES",
    "CATEGORY_OVERRIDES",
    "RAM_ANNOTATIONS",
    "expand_ram_variables",
    "game_name",
    "paper_categories",
]

#: The paper's summary categories, in the order of its tables.
CATEGORIES = (
    "agent_localization",
    "small_object_localization",
    "other_localization",
    "score_clock_lives_display",
    "misc",
)

# fmt: off
RAM_ANNOTATIONS: dict[str, dict[str, int | tuple[int, ...]]] = {
    "asteroids": dict(
        enemy_asteroids_y=(3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19),
        enemy_asteroids_x=(21, 22, 23, 24, 25, 26, 27, 30, 31, 32, 33, 34, 35, 36, 37),
        player_x=73, player_y=74, num_lives_direction=60, player_score_high=61, player_score_low=62,
        player_missile_x1=83, player_missile_x2=84, player_missile_y1=86, player_missile_y2=87,
        player_missile1_direction=89, player_missile2_direction=90,
    ),
    "battlezone": dict(
        blue_tank_facing_direction=46, blue_tank_size_y=47, blue_tank_x=48, blue_tank2_facing_direction=52,
        blue_tank2_size_y=53, blue_tank2_x=54, num_lives=58, missile_y=105, compass_needles_angle=84,
        angle_of_tank=4, left_tread_position=59, right_tread_position=60, crosshairs_color=108, score=29,
    ),
    "berzerk": dict(
        player_x=19, player_y=11, player_direction=14, player_missile_x=22, player_missile_y=23,
        player_missile_direction=21, robot_missile_direction=26, robot_missile_x=29, robot_missile_y=30,
        num_lives=90, robots_killed_count=91, game_level=92, enemy_evilOtto_x=46, enemy_evilOtto_y=89,
        enemy_robots_x=tuple(range(65, 73)), enemy_robots_y=tuple(range(56, 65)), player_score=tuple(range(93, 96)),
    ),
    "bowling": dict(
        ball_x=30, ball_y=41, player_x=29, player_y=40, frame_number_display=36,
        pin_existence=tuple(range(57, 67)), score=33,
    ),
    "boxing": dict(player_x=32, player_y=34, enemy_x=33, enemy_y=35, enemy_score=19, clock=17, player_score=18),
    "breakout": dict(
        ball_x=99, ball_y=101, player_x=72, blocks_hit_count=77, block_bit_map=tuple(range(0, 30)), score=84,
    ),
    "demonattack": dict(
        level=62, player_x=22, enemy_x1=17, enemy_x2=18, enemy_x3=19, missile_y=21, enemy_y1=69, enemy_y2=70,
        enemy_y3=71, num_lives=114,
    ),
    "freeway": dict(player_y=14, score=103, enemy_car_x=tuple(range(108, 118))),
    "frostbite": dict(
        top_row_iceflow_x=34, second_row_iceflow_x=33, third_row_iceflow_x=32, fourth_row_iceflow_x=31,
        enemy_bear_x=104, num_lives=76, igloo_blocks_count=77, enemy_x=tuple(range(84, 88)), player_x=102,
        player_y=100, player_direction=4, score=(72, 73, 74),
    ),
    "hero": dict(
        player_x=27, player_y=31, power_meter=43, room_number=28, level_number=117, dynamite_count=50,
        score=(56, 57),
    ),
    "montezumarevenge": dict(
        room_number=3, player_x=42, player_y=43, player_direction=52, enemy_skull_x=47, enemy_skull_y=46,
        key_monster_x=44, key_monster_y=45, level=57, num_lives=58, items_in_inventory_count=61, room_state=62,
        score_0=19, score_1=20, score_2=21,
    ),
    "mspacman": dict(
        enemy_sue_x=6, enemy_inky_x=7, enemy_pinky_x=8, enemy_blinky_x=9, enemy_sue_y=12, enemy_inky_y=13,
        enemy_pinky_y=14, enemy_blinky_y=15, player_x=10, player_y=16, fruit_x=11, fruit_y=17, ghosts_count=19,
        player_direction=56, dots_eaten_count=119, player_score=120, num_lives=123,
    ),
    "pitfall": dict(
        player_x=97, player_y=105, enemy_logs_x=98, enemy_scorpion_x=99, bottom_of_rope_y=18, clock_sec=89,
        clock_min=88,
    ),
    "pong": dict(
        player_y=51, player_x=46, enemy_y=50, enemy_x=45, ball_x=49, ball_y=54, enemy_score=13, player_score=14,
    ),
    "privateeye": dict(
        player_x=63, player_y=86, room_number=92, clock=(67, 69), player_direction=58, score=(73, 74), dove_x=48,
        dove_y=39,
    ),
    "qbert": dict(
        player_x=43, player_y=67, player_column=35, red_enemy_column=69, green_enemy_column=105,
        score=(89, 90, 91),  # binary-coded decimal
        tile_color=(21, 52, 54, 83, 85, 87, 98, 100, 102, 104, 1, 3, 5, 7, 9, 32, 34, 36, 38, 40, 42),
    ),
    "riverraid": dict(player_x=51, missile_x=117, missile_y=50, fuel_meter_high=55, fuel_meter_low=56),
    "seaquest": dict(
        enemy_obstacle_x=tuple(range(30, 34)), player_x=70, player_y=97, diver_or_enemy_missile_x=tuple(range(71, 75)),
        player_direction=86, player_missile_direction=87, oxygen_meter_value=102, player_missile_x=103,
        score=(57, 58), num_lives=59, divers_collected_count=62,
    ),
    "skiing": dict(
        player_x=25, clock_m=104, clock_s=105, clock_ms=106, score=107, object_y=tuple(range(87, 94)),
    ),
    "spaceinvaders": dict(
        invaders_left_count=17, player_score=104, num_lives=73, player_x=28, enemies_x=26, missiles_y=9,
        enemies_y=24,
    ),
    "tennis": dict(
        enemy_x=27, enemy_y=25, enemy_score=70, ball_x=16, ball_y=17, player_x=26, player_y=24, player_score=69,
    ),
    "venture": dict(
        sprite0_y=20, sprite1_y=21, sprite2_y=22, sprite3_y=23, sprite4_y=24, sprite5_y=25, sprite0_x=79,
        sprite1_x=80, sprite2_x=81, sprite3_x=82, sprite4_x=83, sprite5_x=84, player_x=85, player_y=26,
        current_room=90, num_lives=70, score_1_2=71, score_3_4=72,
    ),
    "videopinball": dict(
        ball_x=67, ball_y=68, player_left_paddle_y=98, player_right_paddle_y=102, score_1=48, score_2=50,
    ),
    "yarsrevenge": dict(
        player_x=32, player_y=31, player_missile_x=38, player_missile_y=37, enemy_x=43, enemy_y=42,
        enemy_missile_x=47, enemy_missile_y=46,
    ),
}
# fmt: on

#: ``game -> {variable: categories}``: replaces :func:`paper_categories` for single (expanded) variables.
CATEGORY_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {}

_LOCALIZATION = ("_x", "_y", "_z", "_column")
_AGENT = ("agent", "player")
_SMALL_OBJECT = ("ball", "missile")
_SCORE_LIKE = ("score", "clock", "lives", "lifes", "meter", "display")
_MISC = ("count", "bit_map", "existence", "level", "room", "game_state", "direction")


def paper_categories(name: str) -> tuple[str, ...]:
    """The paper's categories of a variable name (possibly two, possibly none), in :data:`CATEGORIES` order."""
    found = []
    if any(key in name for key in _LOCALIZATION):
        if any(key in name for key in _SMALL_OBJECT):
            found.append("small_object_localization")
        elif any(key in name for key in _AGENT):
            found.append("agent_localization")
        else:
            found.append("other_localization")
    if any(key in name for key in _SCORE_LIKE):
        found.append("score_clock_lives_display")
    if any(key in name for key in _MISC):
        found.append("misc")
    return tuple(c for c in CATEGORIES if c in found)


def expand_ram_variables(game: str) -> dict[str, int]:
    """``variable -> RAM index`` of ``game``, multi-byte variables split into ``name_0, name_1, …``.

    Raises ``ValueError`` for a game without annotations, listing the annotated ones.
    """
    if game not in RAM_ANNOTATIONS:
        raise ValueError(
            f"no RAM annotations for game {game!r}; annotated games: {', '.join(sorted(RAM_ANNOTATIONS))}"
        )
    expanded: dict[str, int] = {}
    for name, where in RAM_ANNOTATIONS[game].items():
        if isinstance(where, int):
            expanded[name] = where
        else:
            expanded.update({f"{name}_{i}": int(index) for i, index in enumerate(where)})
    for name, index in expanded.items():
        if not 0 <= index < 128:
            raise ValueError(f"RAM index of {game}.{name} must be in [0, 128), got {index}")
    return expanded


def game_name(env_id: str | None) -> str | None:
    """The annotation key of an ALE env id: ``"ALE/Pong-v5"``, ``"PongNoFrameskip-v4"`` → ``"pong"``.

    Returns None for ids that do not name an annotated game (or for None).
    """
    if not env_id:
        return None
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic|-ram|-ramNoFrameskip|-ramDeterministic)$", "", name)
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return key if key in RAM_ANNOTATIONS else None
