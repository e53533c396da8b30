"""The linear probes themselves: softmax classifiers trained together with early stopping (discrete variables) and
ridge regression in closed form (continuous ones), its strength chosen by leaving out one episode at a time
(:func:`fit_ridge_grouped`) or on the validation split (:func:`fit_ridge`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import ProbeConfig
from .metrics import r2_score, weighted_f1

__all__ = ["LinearProbes", "fit_linear_probes", "fit_ridge", "fit_ridge_grouped", "leave_one_group_out_r2"]


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
    x = np.asarray(x_train)
    y = np.asarray(y_train, dtype=np.float64).reshape(len(x), -1)
    intercept = y.mean(axis=0)
    ridge = _RidgePath(x, y - intercept)
    d, dtype = ridge.d, ridge.dtype
    weights = ridge.weights
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


def fit_ridge_grouped(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    alphas: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of every column of ``y`` ``[N, V]`` on ``x`` ``[N, D]`` (features standardised), ``alpha``
    chosen per variable by leave-one-group-out R² (``groups`` ``[N]``: e.g. episode ids; at least 2 groups).

    Every group is held out in turn, and the fit on the others predicts it; the pooled predictions are scored
    against ``y``. Exact and cheap: with ``H`` the fit's hat matrix on all rows (the intercept included), a held-out
    group's residuals are ``(I − H_gg)⁻¹ e_g`` (``e`` the residuals of the fit on all rows), so one
    eigendecomposition serves every group and every ``alpha`` (the features are centred in float64, and directions
    without variance — eigenvalues below 1e-12 of the largest — are left out of the fit and of ``H`` alike).
    Against one validation split this uses every episode: on a few dozen episodes, a strength picked on two can fit
    the training episodes' values of a variable that is constant within an episode (Catch's ball speeds) and miss
    the others'. The weights are then
    fitted on all rows. Returns ``(weight [D, V], intercept [V], alpha [V])``.
    """
    x, y, members = _grouped_rows(x, y, groups)
    mean, intercept = x.mean(axis=0, dtype=np.float64), y.mean(axis=0)
    ridge = _RidgePath(x, y - intercept, mean=mean)
    scores = _held_out_r2(ridge, y - intercept, members, alphas)
    best_alpha = np.asarray(alphas, dtype=np.float64)[
        scores.argmax(axis=0)
    ]  # ties: the first listed, as fit_ridge
    weight = np.stack(
        [ridge.weights(a, null_space=False)[:, j] for j, a in enumerate(best_alpha)], axis=1
    ).astype(np.float64)
    return weight, intercept - mean @ weight, best_alpha


def leave_one_group_out_r2(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: tuple[float, ...]
) -> np.ndarray:
    """R² ``[A, V]`` of each ``alpha``'s pooled leave-one-group-out predictions of ``y`` ``[N, V]`` from ``x`` ``[N,
    D]`` by ridge regression with an unpenalised intercept (what :func:`fit_ridge_grouped` chooses by)."""
    x, y, members = _grouped_rows(x, y, groups)
    centred = y - y.mean(axis=0)
    return _held_out_r2(
        _RidgePath(x, centred, mean=x.mean(axis=0, dtype=np.float64)), centred, members, alphas
    )


def _grouped_rows(x, y, groups) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    groups = np.asarray(groups)
    if groups.shape != (len(x),):
        raise ValueError(f"groups must be [N={len(x)}], got shape {groups.shape}")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    if len(members) < 2:
        raise ValueError(f"leave-one-group-out needs at least 2 groups, got {len(members)}")
    return x, y, members


def _held_out_r2(
    ridge: _RidgePath, centred: np.ndarray, members: list[np.ndarray], alphas: tuple[float, ...]
) -> np.ndarray:
    """R² ``[A, V]`` of the held-out residuals ``(I − H_gg)⁻¹ e_g`` of every group, for every alpha. The fit's
    residuals ``e`` and the hat matrix's blocks ``H_gg`` come from the same spectrum (directions of no variance
    left out of both): at a weak ridge, ``(I − H_gg)⁻¹`` is large, and a mismatch between the two would be
    amplified into the scores. A target constant on the rows scores 0 at every alpha; a NaN score counts as −∞."""
    shrinks = [
        np.where(ridge.positive, ridge.eigenvalues / (ridge.eigenvalues + a), 0.0) for a in alphas
    ]  # [r]
    residuals = [centred - ridge.x @ ridge.weights(a, null_space=False) for a in alphas]  # [A] of [N, V]
    held_out = np.empty((len(alphas), *centred.shape))
    for rows in members:
        part = ridge.left_basis(rows)  # U_g [n_g, r]
        for a, shrink in enumerate(shrinks):
            hat = (part * shrink) @ part.T + 1.0 / len(
                centred
            )  # H_gg: the ridge part plus the intercept's 1/N
            held_out[a, rows] = _solve(np.eye(len(rows)) - hat, residuals[a][rows])
    constant = np.ptp(centred, axis=0) == 0  # its centred values are rounding, and so would its R² be
    total = np.where(constant, 1.0, (centred**2).sum(axis=0))
    scores = np.where(constant, 0.0, 1.0 - (held_out**2).sum(axis=1) / total)
    return np.nan_to_num(scores, nan=-np.inf)


class _RidgePath:
    """One eigendecomposition of centred features for ridge weights ``[D, V]`` of centred targets ``y`` ``[N, V]``
    at any strength (of ``xᵀx`` when ``D ≤ N``, else of ``x xᵀ``).

    ``x`` ``[N, D]``, centred already, or centred here by ``mean`` ``[D]`` after the cast to the working precision
    (float64 while ``min(N, D) ≤ 4096``, else float32): centring float32 features in float32 leaves the columns'
    sums at ≈ 1e-5 of their scale, which the leave-one-group-out identity (it assumes them exactly 0) amplifies at a
    weak ridge. In the float32 precision a weak ridge (``alpha`` ≲ 1e-4 of standardised features, ``D ≥ N``) is
    itself beyond it: ``1 − s² / (s² + alpha)`` cancels."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray | None = None):
        n, self.d = x.shape
        self.dtype = np.float64 if min(n, self.d) <= 4096 else np.float32
        self.x = np.asarray(x, dtype=self.dtype)
        if mean is not None:
            self.x = self.x - mean.astype(self.dtype)
        y = np.asarray(y, dtype=np.float64).astype(self.dtype)
        self.primal = self.d <= n
        gram = self.x.T @ self.x if self.primal else self.x @ self.x.T
        eigenvalues, self.basis = np.linalg.eigh(gram)
        self.eigenvalues = np.maximum(eigenvalues, 0)
        #: the directions with variance: eigenvalues above 1e-12 of the largest (the rest are rounding)
        self.positive = self.eigenvalues > self.eigenvalues.max(initial=0.0) * 1e-12
        self.projected = self.basis.T @ (self.x.T @ y if self.primal else y)

    def weights(self, alpha: float, null_space: bool = True) -> np.ndarray:
        """Ridge weights ``[D, V]`` at strength ``alpha``; ``null_space=False`` leaves out the directions without
        variance (:attr:`positive`), whose eigenvalues are rounding noise."""
        coefficients = self.projected / (self.eigenvalues + alpha)[:, None]
        if not null_space:
            coefficients = np.where(self.positive[:, None], coefficients, 0).astype(coefficients.dtype)
        scaled = self.basis @ coefficients
        return scaled if self.primal else self.x.T @ scaled

    def left_basis(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of ``U`` ``[len(rows), r]`` in ``x = U S Vᵀ`` (directions without variance are 0): the hat
        matrix at strength ``alpha`` is ``U diag(s² / (s² + alpha)) Uᵀ``, ``s²`` = :attr:`eigenvalues`. Built per
        group of rows, so a wide ``x`` of many rows never holds all of ``U``."""
        if not self.primal:
            return np.where(self.positive, self.basis[rows], 0.0).astype(np.float64)
        safe = np.where(self.positive, self.eigenvalues, 1.0)
        scale = np.where(self.positive, 1.0 / np.sqrt(safe), 0.0)
        return (self.x[rows] @ self.basis).astype(np.float64) * scale


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:  # a group the others cannot predict at all: its residuals, least squares
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]
