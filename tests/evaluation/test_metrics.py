"""The probes' scores: weighted F1, R² and the entropy filter's entropy."""

from __future__ import annotations

import numpy as np
import pytest

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import entropy_nats, r2_score, weighted_f1


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
