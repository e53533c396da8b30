"""Training infrastructure: a shared training loop, crash-safe checkpoints and DDP helpers.

``Trainer`` runs AdamW with warm-up + cosine decay, gradient clipping, a NaN/inf guard, bf16 autocast on CUDA,
TensorBoard scalars, a tqdm bar, periodic evaluation and checkpoints, and resumes exactly from
``logdir/checkpoints``; :class:`aime_rl.replay.ReplayWindowDataset` feeds it deterministic per-step batches.
``CheckpointManager`` writes safetensors weights + ``weights_only``-loadable state atomically and keeps the last k.
``init_distributed`` / ``cleanup`` join and leave a ``torchrun`` process group. ``train_tokenizer`` (then,
optionally, ``train_tokenizer_decoder`` on its frozen codes) and ``train_context_model`` train the perception stack
from a replay store; :mod:`aime_rl.pipeline` (the layer
above) is what the CLI runs.
"""

from aime_rl.training.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from aime_rl.training.distributed import (
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)
from aime_rl.training.perception import train_context_model, train_tokenizer, train_tokenizer_decoder
from aime_rl.training.trainer import (
    Trainer,
    TrainerConfig,
    scalar_metrics,
    seed_everything,
    warmup_cosine,
)

__all__ = [
    "train_context_model",
    "train_tokenizer",
    "train_tokenizer_decoder",
    "CheckpointManager",
    "Trainer",
    "TrainerConfig",
    "barrier",
    "capture_rng_state",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "restore_rng_state",
    "scalar_metrics",
    "seed_everything",
    "warmup_cosine",
]
