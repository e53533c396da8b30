"""The linear probes themselves: softmax classifiers trained together with early stopping (discrete variables) and
ridge regression in closed form with the ridge strength chosen on the validation split (continuous ones)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import ProbeConfig
from .metrics import r2_score, weighted_f1

__all__ = ["LinearProbes", "fit_linear_probes", "fit_ridge"]


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
