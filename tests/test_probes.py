"""State probes (aime_rl.evaluation): metrics, the AtariARI protocol, labels, representations, probe_model.

Everything runs on one CPU thread with the tiny perception preset, short Catch episodes and a few hundred Pong
frames (episodes cut at 60 steps so the split by episode has several episodes).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.envs.catch import BALL_RGB, PADDLE_RGB
from aime_rl.evaluation import (
    PAPER_REFERENCE,
    LabelledFrames,
    ProbeConfig,
    ProbeReport,
    VariableInfo,
    atari_ram_labels,
    catch_labels,
    collect_labelled,
    default_label_fn,
    entropy_nats,
    expand_ram_variables,
    frame_stack_features,
    game_name,
    paper_categories,
    probe_model,
    probe_representations,
    r2_score,
    remove_test_duplicates,
    select_variables,
    split_by_episode,
    stream_features,
    untrained_copy,
    weighted_f1,
)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model import VRNN
from aime_rl.wrappers import ContextObservation

from .test_vrnn import SMALL

WINDOW = 4
FAST = ProbeConfig(lr=0.05, batch_size=64, max_epochs=30, patience=5)


def short_catch() -> gym.Env:
    return gym.make("aime_rl/Catch-v0", balls_per_episode=1)  # episodes of 11–16 steps


def pong() -> gym.Env:
    import ale_py

    gym.register_envs(ale_py)
    return gym.make("ALE/Pong-v5", frameskip=4, repeat_action_probability=0.25)


def synthetic(labels: dict[str, np.ndarray], episodes: int, variables: dict[str, VariableInfo] | None = None):
    """LabelledFrames with distinct random 4×4 frames, ``episodes`` equal-length episodes."""
    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    episode_ids = np.repeat(np.arange(episodes), n // episodes)
    steps = np.concatenate([np.arange(n // episodes)] * episodes)
    if variables is None:
        variables = {
            k: VariableInfo("discrete" if np.issubdtype(v.dtype, np.integer) else "continuous", ("misc",))
            for k, v in labels.items()
        }
    return LabelledFrames(
        frames=frames,
        labels=labels,
        variables=variables,
        episode_ids=episode_ids,
        steps=steps,
        actions=np.zeros(n, dtype=np.int64),
        hashes=np.array([hash(f.tobytes()) for f in frames], dtype=np.int64),
    )


@pytest.fixture(scope="module")
def model(model_dir) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def vrnn(model) -> VRNN:
    torch.manual_seed(1)
    return VRNN(model, 3, discrete=True, **SMALL).eval()


@pytest.fixture(scope="module")
def catch_data() -> LabelledFrames:
    return collect_labelled(short_catch, catch_labels, 70, seed=3)


@pytest.fixture(scope="module")
def pong_data() -> LabelledFrames:
    return collect_labelled(pong, atari_ram_labels("pong"), 300, seed=0, max_episode_steps=60)


# ------------------------------------------------------------------------------------------------------ metrics


def test_weighted_f1_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: P = 2/2, R = 2/3, F1 = 0.8; class 1: P = 1/2, R = 1/2, F1 = 0.5; class 2: P = 1/2, R = 1, F1 = 2/3
    expected = (3 * 0.8 + 2 * 0.5 + 1 * (2 / 3)) / 6
    assert weighted_f1(y_true, y_pred) == pytest.approx(expected)
    assert weighted_f1(y_true, y_true) == 1.0
    assert weighted_f1(np.array([1, 1]), np.array([0, 0])) == 0.0  # classes only predicted weigh nothing


def test_r2_and_entropy():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, y + 1) == pytest.approx(1 - 4 / 5)
    assert entropy_nats(np.array([0, 1, 2, 3])) == pytest.approx(np.log(4))
    assert entropy_nats(np.zeros(10)) == 0.0


# ----------------------------------------------------------------------------------------------------- protocol


def test_split_by_episode_and_duplicates():
    data = synthetic({"a": np.arange(200) % 7}, episodes=20)
    split = split_by_episode(data.episode_ids, seed=1)
    parts = [split.train_episodes, split.val_episodes, split.test_episodes]
    assert [len(p) for p in parts] == [14, 2, 4]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    for rows, eps in zip((split.train, split.val, split.test), parts, strict=True):
        assert set(data.episode_ids[rows]) == set(eps)  # no episode in two splits
    again = split_by_episode(data.episode_ids, seed=1)
    assert np.array_equal(again.test, split.test)
    assert not np.array_equal(split_by_episode(data.episode_ids, seed=2).test_episodes, split.test_episodes)

    # make three test frames copies of training/validation frames
    hashes = data.hashes.copy()
    hashes[split.test[:2]] = hashes[split.train[5]]
    hashes[split.test[7]] = hashes[split.val[0]]
    deduped = remove_test_duplicates(split, hashes)
    assert deduped.duplicates_removed == 3
    assert len(deduped.test) == len(split.test) - 3
    assert not np.isin(hashes[deduped.test], hashes[np.r_[split.train, split.val]]).any()
    with pytest.raises(ValueError, match="at least 3 episodes"):
        split_by_episode(np.repeat([0, 1], 5))


def test_entropy_filter_drops_near_constant_variable():
    n = 400
    near_constant = np.zeros(n, dtype=np.int64)
    near_constant[::100] = 1  # entropy ≈ 0.056 nats
    varied = np.arange(n, dtype=np.int64) % 4  # ln 4 ≈ 1.39 nats
    data = synthetic({"near_constant": near_constant, "varied": varied}, episodes=10)
    kept, dropped, entropies = select_variables(data, np.arange(n), 0.6)
    assert kept == ["varied"] and list(dropped) == ["near_constant"]
    assert entropies["varied"] == pytest.approx(np.log(4))
    report = probe_representations(data, {"majority": None}, FAST)
    assert list(report.variables) == ["varied"] and "near_constant" in report.dropped


def test_representation_equal_to_the_labels_scores_one():
    n, rng = 400, np.random.default_rng(1)
    a = rng.integers(0, 5, n)
    b = rng.integers(0, 3, n)
    c = rng.normal(size=n)
    data = synthetic({"a": a, "b": b, "c": c}, episodes=10)
    features = np.concatenate([np.eye(5)[a], np.eye(3)[b], c[:, None]], axis=1).astype(np.float32)
    report = probe_representations(data, {"labels": features}, FAST)
    result = report.representations["labels"]
    assert result.variables["a"].metric == "f1" and result.variables["a"].score == 1.0
    assert result.variables["b"].score == 1.0
    assert result.variables["c"].metric == "r2" and result.variables["c"].score == pytest.approx(
        1.0, abs=1e-6
    )
    assert result.score == pytest.approx(1.0, abs=1e-6)


def test_majority_f1_matches_the_definition():
    n, rng = 600, np.random.default_rng(2)
    labels = rng.choice([3, 5, 9], size=n, p=[0.6, 0.3, 0.1]).astype(np.int64)
    data = synthetic({"v": labels}, episodes=20)
    config = ProbeConfig(seed=4)
    report = probe_representations(data, {"majority": None}, config)
    split = split_by_episode(data.episode_ids, config.fractions, config.seed)
    values, counts = np.unique(labels[split.train], return_counts=True)
    mode = values[np.argmax(counts)]
    p = np.mean(labels[split.test] == mode)
    # predicting the mode everywhere: its class has precision p, recall 1; the others score 0
    assert report.score("majority", "v") == pytest.approx(p * 2 * p / (1 + p))


# ------------------------------------------------------------------------------------------------------- labels


def test_catch_labels_match_the_true_state(catch_data):
    data = catch_data
    assert set(data.labels) == {"ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"}
    assert all(info.kind == "continuous" for info in data.variables.values())
    assert data.num_episodes >= 4 and np.all(data.steps[data.episode_starts()] == 0)
    extent = 63.0  # positions are pixels / (size - 1)
    for i in range(len(data)):
        frame = data.frames[i]
        rows, cols = np.nonzero(np.all(frame == BALL_RGB, axis=-1))
        assert abs(rows.mean() - data.labels["ball_y"][i] * extent) <= 0.5 + 1e-3
        assert abs(cols.mean() - data.labels["ball_x"][i] * extent) <= 0.5 + 1e-3
        _, paddle_cols = np.nonzero(np.all(frame == PADDLE_RGB, axis=-1))
        assert abs(paddle_cols.mean() + 0.5 - data.labels["paddle_x"][i] * extent) <= 0.5 + 1e-3
    # the velocity labels are the ball's motion to the next frame (no bounce, same ball)
    nxt = np.flatnonzero(~data.episode_starts()[1:])  # rows i with i + 1 in the same episode
    dy = (data.labels["ball_y"][nxt + 1] - data.labels["ball_y"][nxt]) * extent
    falling = (dy > 0) & (
        data.labels["ball_y"][nxt + 1] * extent < 57 - 1e-3
    )  # not spawning nor landing (y 57)
    assert falling.sum() > 30
    assert np.allclose(dy[falling], data.labels["ball_vy"][nxt][falling] * 5.0, atol=1e-4)


def test_pong_ram_labels_read_the_right_bytes(pong_data):
    data = pong_data
    assert data.game == "pong" and data.num_episodes == 5
    assert data.variables["ball_x"] == VariableInfo("discrete", ("small_object_localization",), 256)
    assert len(np.unique(data.labels["ball_x"])) > 10 and len(np.unique(data.labels["player_y"])) > 10
    # the ball is the (236, 236, 236) blob inside the playfield: RAM 49/54 follow its column/row exactly
    cols, rows, ram_x, ram_y = [], [], [], []
    for i in range(len(data)):
        r, c = np.nonzero(np.all(data.frames[i, 34:194] == (236, 236, 236), axis=-1))
        if len(r):
            rows.append(r.mean()), cols.append(c.mean())
            ram_x.append(data.labels["ball_x"][i]), ram_y.append(data.labels["ball_y"][i])
    assert len(cols) > 100
    assert np.corrcoef(cols, ram_x)[0, 1] > 0.99 and np.corrcoef(rows, ram_y)[0, 1] > 0.99
    # and they are the bytes themselves, read after every step
    env = pong()
    labels = atari_ram_labels("ALE/Pong-v5")
    env.reset(seed=0)
    for _ in range(5):
        env.step(2)
    ram = env.unwrapped.ale.getRAM()
    assert labels(env, None, {}) == {name: int(ram[i]) for name, i in expand_ram_variables("pong").items()}
    env.close()


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


def test_default_labels_by_env():
    assert default_label_fn(short_catch()) is catch_labels
    env = pong()
    assert default_label_fn(env).game == "pong"
    env.close()
    with pytest.raises(ValueError, match="label_fn"):
        default_label_fn(gym.make("CartPole-v1"))


def test_collection_options(catch_data):
    stay = collect_labelled(short_catch, catch_labels, 40, policy=lambda obs: 1, seed=3)
    assert np.all(stay.actions[~np.r_[stay.episode_starts()[1:], True]] == 1)
    assert len(np.unique(stay.labels["paddle_x"])) == 1  # the paddle never moves

    class Agent:  # SB3's predict(obs, deterministic) -> (action, state)
        def predict(self, obs, deterministic=False):
            return np.array(2), None

    right = collect_labelled(short_catch, catch_labels, 20, policy=Agent(), seed=3)
    assert np.all(np.diff(right.labels["paddle_x"][right.episode_ids == 0]) >= 0)

    small = collect_labelled(short_catch, catch_labels, 70, seed=3, store_size=(32, 32))
    assert small.frames.shape == (70, 32, 32, 3) and np.array_equal(small.hashes, catch_data.hashes)

    long_only = collect_labelled(short_catch, catch_labels, 70, seed=3, min_episode_length=14)
    lengths = np.bincount(long_only.episode_ids)
    assert lengths.min() >= 14 and len(lengths) == long_only.num_episodes < catch_data.num_episodes

    def custom(env, obs, info):
        return {"ball_column": int(env.unwrapped.ball_x), "height": float(env.unwrapped.ball_y)}

    data = collect_labelled(short_catch, custom, 10, seed=3)
    assert data.variables["ball_column"] == VariableInfo(
        "discrete", ("small_object_localization",)
    )  # by name
    assert data.variables["height"].kind == "continuous" and data.labels["ball_column"].dtype == np.int64


def test_labelled_frames_save_load(catch_data, tmp_path):
    path = tmp_path / "catch.npz"
    catch_data.save(path)
    loaded = LabelledFrames.load(path)
    assert np.array_equal(loaded.frames, catch_data.frames)
    assert all(np.array_equal(loaded.labels[k], v) for k, v in catch_data.labels.items())
    assert loaded.variables == catch_data.variables and loaded.action_space == catch_data.action_space
    assert loaded.env_id == "aime_rl/Catch-v0"
    part = catch_data.select_episodes([1, 2])
    assert part.num_episodes == 2 and part.episode_ids[0] == 0
    assert np.array_equal(part.frames, catch_data.frames[np.isin(catch_data.episode_ids, [1, 2])])


# ---------------------------------------------------------------------------------------------- representations


def test_context_streams_reset_per_episode(catch_data, model):
    data = catch_data
    features = stream_features(data, model, window=WINDOW, lanes=2)["context"]
    frames = torch.from_numpy(data.frames).permute(0, 3, 1, 2)  # 64×64 already: no resize
    with torch.inference_mode():
        for episode in data.episode_slices():
            stream = model.stream(1, window=WINDOW)
            fresh = torch.cat([stream.step(frames[i : i + 1]) for i in range(episode.start, episode.stop)])
            np.testing.assert_allclose(features[episode], fresh.numpy(), atol=1e-4)


def test_context_and_belief_equal_the_wrapper(catch_data, model, vrnn):
    """The wrapper's observations, replayed with the recorded actions, are the probed belief features."""
    data = catch_data
    features = stream_features(data, model, window=WINDOW, world_model=vrnn, lanes=3)
    assert features["belief"].shape == (len(data), model.context_dim + vrnn.belief_dim)
    env = ContextObservation(short_catch(), model, window=WINDOW, world_model=vrnn)
    starts = data.episode_starts()
    observations = []
    for i in range(len(data)):
        if i == 0:
            obs, _ = env.reset(seed=3)
        elif starts[i]:
            obs, _ = env.reset()
        else:
            obs, *_ = env.step(int(data.actions[i - 1]))
        observations.append(obs)
    np.testing.assert_allclose(features["belief"], np.stack(observations), atol=1e-4)
    np.testing.assert_allclose(features["context"], features["belief"][:, : model.context_dim])


def test_baselines_shapes_and_frame_stack_stays_in_episode(catch_data, model):
    data = catch_data
    stacked = frame_stack_features(data, size=(8, 8), stack=3)
    assert stacked.shape == (len(data), 3 * 3 * 8 * 8)
    first = np.flatnonzero(data.episode_starts())[1]  # the second episode's first frame
    block = 3 * 8 * 8
    assert np.array_equal(
        stacked[first, :block], stacked[first, 2 * block :]
    )  # repeats itself, not the last ep
    fresh = untrained_copy(model, seed=5)
    again = untrained_copy(model, seed=5)
    assert fresh.config == model.config
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters(), strict=True))


# ------------------------------------------------------------------------------------------------- end to end


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
