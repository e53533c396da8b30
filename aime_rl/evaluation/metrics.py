"""The probes' scores and the entropy filter: weighted F1 (discrete variables), R² (continuous ones) and the
entropy of a variable's values in nats."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy_nats", "r2_score", "weighted_f1"]


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 per class, averaged with the classes' support in ``y_true`` as weights (sklearn's ``average="weighted"``).

    Per class c: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), each 0 when its
    denominator is 0. Classes only in ``y_pred`` have weight 0.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y_true.shape} and {y_pred.shape}"
        )
    if y_true.size == 0:
        raise ValueError("weighted_f1 needs at least one sample")
    classes, support = np.unique(y_true, return_counts=True)
    true_positive = np.array([np.sum((y_true == c) & (y_pred == c)) for c in classes], dtype=np.float64)
    predicted = np.array([np.sum(y_pred == c) for c in classes], dtype=np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = true_positive / support
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(np.sum(f1 * support) / y_true.size)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (1 for a perfect fit; 0 for a constant target
    unless predicted exactly)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    residual = float(np.sum((y_true - y_pred) ** 2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def entropy_nats(values: np.ndarray) -> float:
    """Entropy (nats) of the empirical distribution of ``values``."""
    _, counts = np.unique(np.asarray(values), return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p))) + 0.0  # + 0.0: no -0.0 for a constant
