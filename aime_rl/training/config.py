"""The settings of the shared training loop (:class:`~aime_rl.training.trainer.Trainer`), validated."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainerConfig"]


@dataclass
class TrainerConfig:
    """Settings of :class:`Trainer`.

    Attributes:
        steps: total optimizer steps (the cosine schedule ends here).
        batch_size: windows per batch *per process* (the global batch is ``batch_size * world_size``).
        sequence_length: frames per window ``T``.
        lr, weight_decay: AdamW settings; weight decay applies to parameters with ``ndim >= 2`` only
            (not to biases and normalisation scales).
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``; cosine decay to 0 at ``steps`` after.
        grad_clip: maximum global gradient norm (``None`` or ``0``: no clipping; the norm is still checked).
        max_bad_steps: consecutive non-finite steps tolerated before ``RuntimeError``.
        seed: seeds torch/NumPy/Python RNGs at construction and the data stream (see the module docstring).
        log_every, eval_every, checkpoint_every: intervals in steps (``0`` disables evaluation / periodic
            checkpoints; a checkpoint is always written at the end of ``fit``).
        keep_last: checkpoints kept on disk.
        amp_bf16: bf16 autocast for the forward pass (CUDA only; ignored on CPU).
        num_workers: DataLoader workers used by :meth:`ReplayWindowDataset.from_config`.
        holdout_fraction: fraction of episodes held out from training by :meth:`ReplayWindowDataset.from_config`.
        device: ``"cpu"``, ``"cuda"`` (``cuda:LOCAL_RANK`` under DDP) or an explicit ``"cuda:N"``.
    """

    steps: int
    batch_size: int
    sequence_length: int
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float | None = 1.0
    max_bad_steps: int = 10
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 500
    keep_last: int = 3
    amp_bf16: bool = True
    num_workers: int = 0
    holdout_fraction: float = 0.1
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "sequence_length", "max_bad_steps", "log_every", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainerConfig.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"TrainerConfig.holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
