"""The probing protocol (AtariARI, Anand et al. 2019), on features of labelled frames.

1. Split by episode, 70/10/20 (train/val/test), shuffled with a seed: no episode is in two splits.
2. Remove from the test split every frame whose bytes also occur in the train or validation split (by hash).
3. Drop discrete variables whose value entropy on the training split is below 0.6 nats (and continuous ones that
   are constant on it).
4. Standardise the features with the training split's mean and standard deviation.
5. One linear probe per variable. Discrete: a softmax classifier over the variable's classes (all 256 values for
   RAM bytes), trained with Adam on minibatches of the training split, with early stopping on the validation
   split (weighted F1 first, cross-entropy to break ties; ``patience`` epochs; the best epoch's weights are
   kept), scored by weighted F1 on the test split. Continuous (not in the paper, whose variables are RAM bytes):
   ridge regression in closed form on the training and validation episodes, the ridge strength chosen by leaving
   out one of those episodes at a time (``ridge_selection="episodes"``; ``"validation"``: fitted on the training
   split, the strength chosen on the validation split), scored by R² on the test split.
6. Per representation: per-category score = mean over the category's variables; the overall score = mean over
   categories (so categories with many variables do not dominate, as in the paper).

The majority baseline (features None) predicts the training split's most frequent value (for continuous variables the
mean of the rows their ridge probes are fitted on).

This module runs the protocol (:func:`probe_features`, :func:`probe_representations`); its parts live beside it and
are importable from here as well: :mod:`~aime_rl.evaluation.config` (:class:`ProbeConfig`),
:mod:`~aime_rl.evaluation.metrics` (weighted F1, R², entropy), :mod:`~aime_rl.evaluation.split` (steps 1–4) and
:mod:`~aime_rl.evaluation.fitting` (the linear classifiers and ridge regression of step 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict

import numpy as np

from .config import ProbeConfig
from .fitting import LinearProbes, fit_linear_probes, fit_ridge, fit_ridge_grouped
from .labelled_frames import LabelledFrames, VariableInfo
from .metrics import entropy_nats, r2_score, weighted_f1
from .report import ProbeReport, RepresentationResult, VariableResult, category_scores
from .split import Split, remove_test_duplicates, select_variables, split_by_episode, standardise

#: The version of the protocol's code: bumped when what a probe measures changes without a :class:`ProbeConfig` setting
#: changing (2: continuous variables' ridge chosen by leaving out episodes), so that a cached probe is measured again.
PROTOCOL_VERSION = 2

__all__ = [
    "PROTOCOL_VERSION",
    "LinearProbes",
    "ProbeConfig",
    "Split",
    "entropy_nats",
    "fit_linear_probes",
    "fit_ridge",
    "probe_features",
    "probe_representations",
    "r2_score",
    "remove_test_duplicates",
    "select_variables",
    "split_by_episode",
    "standardise",
    "weighted_f1",
]


def _class_coding(values: np.ndarray, info: VariableInfo) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(class indices [N], vocabulary or None, num_classes)`` of a discrete variable."""
    if info.num_classes is not None and values.min() >= 0 and values.max() < info.num_classes:
        return values.astype(np.int64), None, int(info.num_classes)
    vocabulary = np.unique(values)
    return np.searchsorted(vocabulary, values).astype(np.int64), vocabulary, len(vocabulary)


def _groups(names: list[str], width: int, classes: dict[str, int], budget: int) -> list[list[str]]:
    """Consecutive groups of variables whose classifier weights (``width × max classes × count``) fit ``budget``."""
    groups: list[list[str]] = []
    for name in names:
        if groups:
            trial = groups[-1] + [name]
            if width * max(classes[n] for n in trial) * len(trial) <= budget:
                groups[-1] = trial
                continue
        groups.append([name])
    return groups


def probe_features(
    features: np.ndarray | None,
    data: LabelledFrames,
    split: Split,
    variables: list[str],
    config: ProbeConfig | None = None,
    name: str = "features",
) -> RepresentationResult:
    """Probe ``variables`` of ``data`` from ``features`` ``[N, D]`` (None: the majority baseline) on ``split``."""
    config = config or ProbeConfig()
    results: dict[str, VariableResult] = {}
    discrete = [v for v in variables if data.variables[v].kind == "discrete"]
    continuous = [v for v in variables if data.variables[v].kind == "continuous"]
    coding = {v: _class_coding(data.labels[v], data.variables[v]) for v in discrete}

    if features is None:
        for v in discrete:
            values, counts = np.unique(data.labels[v][split.train], return_counts=True)
            mode = values[np.argmax(counts)]
            predicted = np.full(len(split.test), mode)
            results[v] = _result(
                v, data, weighted_f1(data.labels[v][split.test], predicted), {"prediction": mode}
            )
        # continuous: the mean of the rows a ridge probe is fitted on (its prediction without features)
        for v in continuous:
            mean = float(np.mean(data.labels[v][_ridge_rows(split, config)]))
            predicted = np.full(len(split.test), mean)
            results[v] = _result(
                v, data, r2_score(data.labels[v][split.test], predicted), {"prediction": mean}
            )
        dim = 0
    else:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(data):
            raise ValueError(
                f"features of {name!r} must be [N={len(data)}, D], got shape {tuple(features.shape)}"
            )
        dim = features.shape[1]
        x = standardise(features, split.train)
        if discrete:
            classes = {v: coding[v][2] for v in discrete}
            for group in _groups(discrete, dim, classes, config.max_group_parameters):
                y = np.stack([coding[v][0] for v in group], axis=1)  # [N, V]
                probes = fit_linear_probes(
                    x[split.train],
                    y[split.train],
                    x[split.val],
                    y[split.val],
                    [classes[v] for v in group],
                    config,
                )
                predicted = probes.predict(x[split.test])
                for j, v in enumerate(group):
                    score = weighted_f1(y[split.test, j], predicted[:, j])
                    results[v] = _result(v, data, score, {"epoch": int(probes.epochs[j])})
        if continuous:
            y = np.stack([data.labels[v] for v in continuous], axis=1)
            weight, intercept, alphas = _fit_continuous(x, y, data.episode_ids, split, config)
            predicted = x[split.test].astype(np.float64) @ weight + intercept
            for j, v in enumerate(continuous):
                score = r2_score(y[split.test, j], predicted[:, j])
                results[v] = _result(v, data, score, {"alpha": float(alphas[j])})
    ordered = {v: results[v] for v in variables}
    by_category = category_scores(
        {v: r.score for v, r in ordered.items()}, {v: r.categories for v, r in ordered.items()}
    )
    score = _mean(by_category.values()) if by_category else _mean(r.score for r in ordered.values())
    return RepresentationResult(
        name=name,
        dim=dim,
        variables=ordered,
        category_scores=by_category,
        score=score,
        mean_score=_mean(r.score for r in ordered.values()),
    )


def _fit_continuous(
    x: np.ndarray, y: np.ndarray, episode_ids: np.ndarray, split: Split, config: ProbeConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge probes of ``y`` ``[N, V]`` from standardised ``x`` ``[N, D]`` by ``config.ridge_selection`` → ``(weight
    [D, V], intercept [V], alpha [V])``."""
    if config.ridge_selection == "validation":
        return fit_ridge(x[split.train], y[split.train], x[split.val], y[split.val], config.ridge_alphas)
    rows = _ridge_rows(split, config)
    return fit_ridge_grouped(x[rows], y[rows], np.asarray(episode_ids)[rows], config.ridge_alphas)


def _ridge_rows(split: Split, config: ProbeConfig) -> np.ndarray:
    """The rows a continuous variable's ridge is fitted on: the training split, and with ``ridge_selection =
    "episodes"`` the validation split too."""
    if config.ridge_selection == "validation":
        return split.train
    return np.concatenate([split.train, split.val])


def _result(name: str, data: LabelledFrames, score: float, details: dict) -> VariableResult:
    info = data.variables[name]
    details = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in details.items()}
    return VariableResult(
        name=name,
        kind=info.kind,
        metric="f1" if info.kind == "discrete" else "r2",
        score=float(score),
        categories=tuple(info.categories),
        details=details,
    )


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def probe_representations(
    data: LabelledFrames,
    features: Mapping[str, np.ndarray | None],
    config: ProbeConfig | None = None,
    metadata: dict | None = None,
) -> ProbeReport:
    """The whole protocol on every representation in ``features`` (``name -> [N, D]`` or None for majority).

    All representations share one split, one deduplicated test set and one set of kept variables.
    """
    config = config or ProbeConfig()
    split = split_by_episode(data.episode_ids, config.fractions, config.seed)
    if config.remove_duplicates:
        split = remove_test_duplicates(split, data.hashes)
    kept, dropped, entropies = select_variables(data, split.train, config.entropy_threshold)
    if not kept:
        raise ValueError(f"no variable left to probe: {dropped}")
    results = {
        name: probe_features(feats, data, split, kept, config, name=name) for name, feats in features.items()
    }
    return ProbeReport(
        representations=results,
        variables={
            v: {
                "kind": data.variables[v].kind,
                "categories": list(data.variables[v].categories),
                "num_classes": data.variables[v].num_classes,
                "entropy": entropies.get(v),
            }
            for v in kept
        },
        dropped=dropped,
        split=split.sizes(),
        env_id=data.env_id,
        game=data.game,
        num_frames=len(data),
        num_episodes=data.num_episodes,
        config=asdict(config),
        metadata=dict(metadata or {}),
    )
