"""Shared fixtures: tiny models, small generated videos (CPU only, nothing downloaded), torchrun helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO

TINY_TOKENIZER = dict(code_dim=32, num_codes=16, base_channels=8, num_quantizers=4, perceptual_weight=0.0)

#: ``config.json`` of ``CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32))`` as versions before the
#: nested config wrote it: flat, ``CausalPerceiverIO``'s keyword arguments (such directories must keep loading).
FLAT_TINY_CONFIG = {
    "class": "CausalPerceiverIO",
    "video_shape": [8, 3, 32, 32],
    "num_latents": 8,
    "num_latent_channels": 32,
    "num_codes": 32,
    "downsample": 8,
    "code_dim": 32,
    "base_channels": 16,
    "num_quantizers": 2,
    "use_3d_conv": True,
    "temporal_downsample": False,
    "commitment_weight": 0.05,
    "diversity_weight": 0.1,
    "perceptual_weight": 0.0,
    "num_cross_attention_heads": 2,
    "num_self_attention_heads": 2,
    "num_self_attention_layers": 1,
    "widening_factor": 2,
    "dropout": 0.0,
    "sequence_length": 8,
    "num_condition_channels": None,
    "label_smoothing": 0.1,
    "next_frame_weight": 1.0,
    "context_prediction_weight": 0.0,
    "tokenizer_options": {},
    "mark_changes": False,
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for every test (module fixtures included): CI has 2 shared cores, and tiny models run
    faster on one thread than on two oversubscribed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random CausalPerceiverIO checkpoint (64×64 frames, context_dim 32) for the env-wrapper tests."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("perceiver")
    CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64)).save_pretrained(directory)
    return str(directory)


@pytest.fixture
def tiny_tokenizer_kwargs() -> dict:
    """Arguments for a VQPTTokenizer small enough to train in seconds on a CPU."""
    return dict(TINY_TOKENIZER)


@pytest.fixture
def video() -> torch.Tensor:
    """A batch of moving-sprite videos ``[2, 6, 3, 32, 32]`` in [0, 1]."""
    return moving_sprites(2, 6, 32, generator=torch.Generator().manual_seed(1))


def sprite_batches(batch_size: int, num_frames: int, size: int, seed: int):
    """An endless iterator of moving-sprite batches with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield moving_sprites(batch_size, num_frames, size, generator=g)


# ------------------------------------------------------------------------------------------------- torchrun workers

REPO_ROOT = Path(__file__).resolve().parents[1]


def worker_env() -> dict[str, str]:
    """Environment of a worker subprocess: this checkout importable, one thread, gloo on CPU (even on a GPU
    machine), and no RANK/WORLD_SIZE inherited from an outer torchrun."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        CUDA_VISIBLE_DEVICES="",
    )
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    """The command prefix that runs a script in ``nproc`` local processes (``torch.distributed.run``)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
    ]


def run_worker(args: list[str], timeout: float = 240) -> None:
    """Run ``args`` in the repository root with :func:`worker_env`; fail the test with its output if it fails."""
    result = subprocess.run(
        args, env=worker_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
