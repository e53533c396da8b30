"""The probing protocol (AtariARI, Anand et al. 2019), on features of labelled frames.

1. Split by episode, 70/10/20 (train/val/test), shuffled with a seed: no episode is in two splits.
2. Remove from the test split every frame whose bytes also occur in the train or validation split (by hash).
3. Drop discrete variables whose value entropy on the training split is below 0.6 nats (and continuous ones that
   are constant on it).
4. Standardise the features with the training split's mean and standard deviation.
5. One linear probe per variable. Discrete: a softmax classifier over the variable's classes (all 256 values for
   RAM bytes), trained with Adam on minibatches of the training split, with early stopping on the validation
   split (weighted F1 first, cross-entropy to break ties; ``patience`` epochs; the best epoch's weights are
   kept), scored by weighted F1 on the test split. Continuous: ridge regression in closed form, the ridge
   strength chosen on the validation split, scored by R² on the test split.
6. Per representation: per-category score = mean over the category's variables; the overall score = mean over
   categories (so categories with many variables do not dominate, as in the paper).

The majority baseline (features None) predicts the training split's most frequent value (mean for continuous).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .labels import LabelledFrames, VariableInfo
from .report import ProbeReport, RepresentationResult, VariableResult, category_scores

__all__ = [
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


@dataclass
class ProbeConfig:
    """Settings of the protocol.

    Attributes:
        fractions: train/val/test fractions of the episodes (each split gets at least one episode).
        entropy_threshold: discrete variables below this entropy (nats, training split) are dropped.
        remove_duplicates: drop test frames whose bytes occur in the train or validation split.
        lr, batch_size, max_epochs, patience: Adam learning rate, minibatch size, epoch limit and early-stopping
            patience (epochs without a better validation score) of the linear classifiers. The paper used
            5e-4 / 64 / 100 / 15 on a GPU; the defaults here converge in fewer steps on a CPU.
        max_group_parameters: variables are trained together (one einsum) in groups of at most this many
            classifier weights, which bounds memory for wide features (raw pixels).
        ridge_alphas: ridge strengths tried for continuous variables (features standardised).
        seed: the episode split, the minibatch order.
        device: where the classifiers train.
    """

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    entropy_threshold: float = 0.6
    remove_duplicates: bool = True
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 15
    max_group_parameters: int = 8_000_000
    ridge_alphas: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f <= 0 for f in self.fractions):
            raise ValueError(f"ProbeConfig.fractions must be three positive numbers, got {self.fractions}")
        for name in ("batch_size", "max_epochs", "patience", "max_group_parameters"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"ProbeConfig.lr must be > 0, got {self.lr}")
        if not self.ridge_alphas or any(a <= 0 for a in self.ridge_alphas):
            raise ValueError(f"ProbeConfig.ridge_alphas must be positive numbers, got {self.ridge_alphas}")


# ------------------------------------------------------------------------------------------------------ metrics


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


# -------------------------------------------------------------------------------------------------------- split


@dataclass
class Split:
    """Row indices (int64, sorted) of each split and the episode ids behind them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_episodes: np.ndarray
    val_episodes: np.ndarray
    test_episodes: np.ndarray
    duplicates_removed: int = 0

    def sizes(self) -> dict[str, int]:
        return {
            "train_frames": len(self.train),
            "val_frames": len(self.val),
            "test_frames": len(self.test),
            "train_episodes": len(self.train_episodes),
            "val_episodes": len(self.val_episodes),
            "test_episodes": len(self.test_episodes),
            "test_duplicates_removed": self.duplicates_removed,
        }


def split_by_episode(
    episode_ids: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> Split:
    """Shuffle the episodes with ``seed`` and cut them ``fractions`` (train/val/test) of the episode count.

    Validation and test get ``max(1, round(f * E))`` episodes each, train the rest (the paper's cut for E ≥ 4).
    Raises ``ValueError`` with fewer than 3 episodes.
    """
    episode_ids = np.asarray(episode_ids)
    episodes = np.unique(episode_ids)
    n = len(episodes)
    total = float(sum(fractions))
    n_val = max(1, round(fractions[1] / total * n))
    n_test = max(1, round(fractions[2] / total * n))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"splitting by episode needs at least 3 episodes (one per split), got {n}; collect more steps or "
            "cut episodes shorter (max_episode_steps)"
        )
    shuffled = np.random.default_rng(seed).permutation(episodes)
    train_eps = np.sort(shuffled[: n - n_val - n_test])
    val_eps = np.sort(shuffled[n - n_val - n_test : n - n_test])
    test_eps = np.sort(shuffled[n - n_test :])

    def rows(eps: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(episode_ids, eps)).astype(np.int64)

    return Split(rows(train_eps), rows(val_eps), rows(test_eps), train_eps, val_eps, test_eps)


def remove_test_duplicates(split: Split, hashes: np.ndarray) -> Split:
    """Drop test rows whose frame hash occurs in the train or validation split (the paper's deduplication)."""
    seen = np.concatenate([hashes[split.train], hashes[split.val]])
    keep = ~np.isin(hashes[split.test], seen)
    test = split.test[keep]
    if len(test) == 0:
        raise ValueError(
            "every test frame also occurs in the train/validation split; collect more varied data"
        )
    return Split(
        split.train,
        split.val,
        test,
        split.train_episodes,
        split.val_episodes,
        split.test_episodes,
        duplicates_removed=split.duplicates_removed + int((~keep).sum()),
    )


def select_variables(
    data: LabelledFrames, train: np.ndarray, entropy_threshold: float = 0.6
) -> tuple[list[str], dict[str, str], dict[str, float]]:
    """``(kept, dropped, entropies)``: the variables worth probing, on the training rows.

    Discrete variables with entropy < ``entropy_threshold`` nats are dropped, continuous ones that are constant.
    ``dropped`` maps a name to the reason; ``entropies`` holds every discrete variable's training entropy.
    """
    kept, dropped, entropies = [], {}, {}
    for name, info in data.variables.items():
        values = data.labels[name][train]
        if info.kind == "discrete":
            entropies[name] = entropy_nats(values)
            if entropies[name] < entropy_threshold:
                dropped[name] = f"entropy {entropies[name]:.3f} nats < {entropy_threshold}"
                continue
        elif float(np.std(values)) == 0.0:
            dropped[name] = "constant on the training split"
            continue
        kept.append(name)
    return kept, dropped, entropies


def standardise(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with the training rows' statistics (std 1 where a feature is constant)."""
    x = np.asarray(features, dtype=np.float32)
    mean = x[train].mean(axis=0, dtype=np.float64)
    std = x[train].std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return ((x - mean) / std).astype(np.float32)


# ------------------------------------------------------------------------------------------ linear classifiers


@dataclass
class LinearProbes:
    """Linear softmax classifiers of ``V`` variables on ``D`` features: ``logits[n, v] = x[n] @ weight[v] + bias[v]``.

    ``weight`` float32 ``[V, D, C]``, ``bias`` ``[V, C]``; ``num_classes[v] ≤ C`` (larger classes are masked);
    ``epochs[v]`` is the epoch whose weights were kept (1-based; 0 = the initial zero weights).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    num_classes: np.ndarray
    epochs: np.ndarray

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` → ``[N, V, C]``, classes beyond a variable's ``num_classes`` at -1e9."""
        logits = torch.einsum("nd,vdc->nvc", x, self.weight) + self.bias
        return logits.masked_fill(~self._valid().to(logits.device), -1e9)

    def predict(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """Class indices int64 ``[N, V]``."""
        x = torch.as_tensor(x, dtype=torch.float32, device=self.weight.device)
        with torch.no_grad():
            parts = [self.logits(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros((0, len(self.num_classes)), np.int64)

    def _valid(self) -> torch.Tensor:
        c = self.weight.shape[-1]
        return torch.arange(c)[None, :] < torch.as_tensor(self.num_classes)[:, None]


def fit_linear_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: np.ndarray | list[int],
    config: ProbeConfig | None = None,
) -> LinearProbes:
    """Train one linear softmax classifier per column of ``y`` (class indices, int64 ``[N, V]``).

    The classifiers share minibatches (one einsum) but not parameters; Adam's updates are per parameter, so each
    is trained exactly as it would be alone. Each keeps the weights of its best validation epoch (weighted F1,
    ties broken by lower cross-entropy) and stops improving after ``patience`` epochs without progress; training
    ends when every classifier has stopped or after ``max_epochs``.
    """
    config = config or ProbeConfig()
    device = torch.device(config.device)
    num_classes = np.asarray(num_classes, dtype=np.int64)
    v, c = len(num_classes), int(num_classes.max())
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_train, dtype=torch.int64, device=device).reshape(len(xt), v)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    yv_np = np.asarray(y_val, dtype=np.int64).reshape(len(xv), v)
    yv = torch.as_tensor(yv_np, device=device)
    weight = torch.zeros(v, xt.shape[1], c, device=device, requires_grad=True)
    bias = torch.zeros(v, c, device=device, requires_grad=True)
    probes = LinearProbes(weight, bias, num_classes, np.zeros(v, dtype=np.int64))
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)

    best_weight, best_bias = weight.detach().clone(), bias.detach().clone()
    best_f1, best_loss = _validate(probes, xv, yv, yv_np)
    waited = np.zeros(v, dtype=np.int64)
    for epoch in range(1, config.max_epochs + 1):
        active = torch.as_tensor(waited < config.patience, device=device, dtype=torch.float32)
        if not bool(active.any()):
            break
        order = torch.randperm(len(xt), generator=generator).to(device)
        for start in range(0, len(xt), config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = probes.logits(xt[rows])  # [b, V, C]
            loss = F.cross_entropy(logits.reshape(-1, c), yt[rows].reshape(-1), reduction="none")
            loss = (loss.view(len(rows), v).mean(0) * active).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        f1, val_loss = _validate(probes, xv, yv, yv_np)
        better = (f1 > best_f1 + 1e-12) | ((f1 >= best_f1 - 1e-12) & (val_loss < best_loss - 1e-7))
        better &= waited < config.patience
        with torch.no_grad():
            index = torch.as_tensor(np.flatnonzero(better), device=device)
            best_weight[index] = weight[index]
            best_bias[index] = bias[index]
        best_f1 = np.where(better, f1, best_f1)
        best_loss = np.where(better, val_loss, best_loss)
        probes.epochs[better] = epoch
        waited = np.where(better, 0, waited + 1)
    return LinearProbes(best_weight, best_bias, num_classes, probes.epochs)


def _validate(
    probes: LinearProbes, x: torch.Tensor, y: torch.Tensor, y_np: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable weighted F1 and mean cross-entropy on the validation rows."""
    with torch.no_grad():
        logits = probes.logits(x)
        v, c = logits.shape[1], logits.shape[2]
        loss = F.cross_entropy(logits.reshape(-1, c), y.reshape(-1), reduction="none").view(len(x), v).mean(0)
        predicted = logits.argmax(-1).cpu().numpy()
    f1 = np.array([weighted_f1(y_np[:, j], predicted[:, j]) for j in range(v)])
    return f1, loss.cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------- ridge regression


def fit_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    alphas: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of every column of ``y`` ``[N, V]`` on ``x`` ``[N, D]`` (features standardised).

    Minimises ``|y - mean - x w|² + alpha |w|²`` in closed form from one eigendecomposition (of ``xᵀx`` when
    ``D ≤ N``, else of ``x xᵀ``); ``alpha`` is chosen per variable by validation R². Returns ``(weight [D, V],
    intercept [V], alpha [V])``.
    """
    n, d = x_train.shape
    dtype = np.float64 if min(n, d) <= 4096 else np.float32
    x = np.asarray(x_train, dtype=dtype)
    y = np.asarray(y_train, dtype=np.float64).reshape(n, -1)
    intercept = y.mean(axis=0)
    yc = (y - intercept).astype(dtype)
    if d <= n:
        eigenvalues, basis = np.linalg.eigh(x.T @ x)  # [D], [D, D]
        projected = basis.T @ (x.T @ yc)  # [D, V]

        def weights(alpha: float) -> np.ndarray:
            return basis @ (projected / (np.maximum(eigenvalues, 0) + alpha)[:, None])

    else:
        eigenvalues, basis = np.linalg.eigh(x @ x.T)  # [N], [N, N]
        projected = basis.T @ yc  # [N, V]

        def weights(alpha: float) -> np.ndarray:
            return x.T @ (basis @ (projected / (np.maximum(eigenvalues, 0) + alpha)[:, None]))

    xv = np.asarray(x_val, dtype=dtype)
    yv = np.asarray(y_val, dtype=np.float64).reshape(len(xv), -1)
    best_score = np.full(y.shape[1], -np.inf)
    best_weight = np.zeros((d, y.shape[1]))
    best_alpha = np.zeros(y.shape[1])
    for alpha in alphas:
        w = weights(alpha).astype(np.float64)
        predicted = xv @ w + intercept
        scores = np.array([r2_score(yv[:, j], predicted[:, j]) for j in range(y.shape[1])])
        better = scores > best_score
        best_score[better] = scores[better]
        best_weight[:, better] = w[:, better]
        best_alpha[better] = alpha
    return best_weight, intercept, best_alpha


# -------------------------------------------------------------------------------------------------- the protocol


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
        for v in continuous:
            mean = float(np.mean(data.labels[v][split.train]))
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
            weight, intercept, alphas = fit_ridge(
                x[split.train], y[split.train], x[split.val], y[split.val], config.ridge_alphas
            )
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
