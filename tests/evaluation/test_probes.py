"""The probing protocol on synthetic labelled frames: a perfect representation scores one, the majority baseline."""

from __future__ import annotations

import numpy as np
import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import ProbeConfig, probe_representations, split_by_episode
from aime_rl.evaluation.fitting import fit_ridge_grouped
from aime_rl.evaluation.split import standardise
from tests.evaluation.helpers import FAST, synthetic


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


def test_probe_config_names_an_unknown_ridge_selection():
    with pytest.raises(ValueError, match="ridge_selection"):
        ProbeConfig(ridge_selection="cross-validation")


def test_default_ridge_is_chosen_by_leaving_out_each_training_or_validation_episode():
    # a value constant within each episode, read from noise: the one validation episode and the episodes held out
    # in turn choose different strengths here (1e-6 and 1e4)
    n, episodes, rng = 400, 10, np.random.default_rng(2)
    data = synthetic(
        {"c": rng.normal(size=episodes)[np.repeat(np.arange(episodes), n // episodes)]}, episodes
    )
    features = rng.normal(size=(n, 30)).astype(np.float32)
    config = ProbeConfig()
    report = probe_representations(data, {"noise": features}, config)
    split = split_by_episode(data.episode_ids, config.fractions, config.seed)
    rows = np.concatenate([split.train, split.val])
    x, y = standardise(features, split.train)[rows], data.labels["c"][rows, None]
    _, _, alphas = fit_ridge_grouped(x, y, data.episode_ids[rows], config.ridge_alphas)
    assert report.representations["noise"].variables["c"].details["alpha"] == alphas[0]


@pytest.mark.parametrize("selection", ["episodes", "validation"])
def test_majority_baseline_of_a_continuous_variable_predicts_the_ridge_rows_mean(selection):
    n, rng = 400, np.random.default_rng(5)
    data = synthetic({"c": rng.normal(size=n) + np.repeat(rng.normal(size=10), n // 10)}, episodes=10)
    config = ProbeConfig(ridge_selection=selection)
    report = probe_representations(data, {"majority": None}, config)
    split = split_by_episode(data.episode_ids, config.fractions, config.seed)
    rows = split.train if selection == "validation" else np.concatenate([split.train, split.val])
    prediction = report.representations["majority"].variables["c"].details["prediction"]
    assert prediction == pytest.approx(float(np.mean(data.labels["c"][rows])))
