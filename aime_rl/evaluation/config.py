"""The settings of the probing protocol (:mod:`aime_rl.evaluation.probes`), validated."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RIDGE_SELECTIONS", "ProbeConfig"]

#: How a continuous variable's ridge strength can be chosen (:attr:`ProbeConfig.ridge_selection`).
RIDGE_SELECTIONS = ("episodes", "validation")


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
        ridge_selection: how a continuous variable's ridge strength is chosen. ``"episodes"``: fitted on the
            training and validation episodes, the strength by leaving out one of them at a time (exact, from one
            eigendecomposition); ``"validation"``: fitted on the training split, the strength chosen on the
            validation split, as the classifiers stop. With a few dozen episodes the validation split is one or
            two, and a variable that is constant within an episode (Catch's ball speeds) can then score far
            below zero on the test split; the README's tables before the thirty-first session used it.
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
    ridge_selection: str = "episodes"
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
        if self.ridge_selection not in RIDGE_SELECTIONS:
            raise ValueError(
                f"ProbeConfig.ridge_selection must be one of {RIDGE_SELECTIONS}, got {self.ridge_selection!r}"
            )
