"""Helpers shared by tests in several folders: constants, small builders and the torchrun helpers.

Fixtures live in ``conftest.py`` files (this folder's for every test, a subfolder's for that folder only); plain
functions and constants a test imports live here (``from tests.helpers import ...``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import aime_rl  # noqa: F401  (registers aime_rl/Catch-v0)
from aime_rl.data import moving_sprites
from aime_rl.replay import ReplayStore

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

#: Sizes of a small VRNN (belief_dim 32 + 8) for the tiny perception preset.
SMALL = dict(hidden_dim=32, latent_dim=8, embed_dim=32, mlp_dim=64, decoder_channels=16, max_components=6)


def sprite_batches(batch_size: int, num_frames: int, size: int, seed: int):
    """An endless iterator of moving-sprite batches with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield moving_sprites(batch_size, num_frames, size, generator=g)


def collect_catch(directory, episodes: int, seed: int = 0, **env_kwargs) -> ReplayStore:
    """Random-policy episodes of Catch into a new store: one ball (12–16 steps) at 64×64 unless ``env_kwargs``
    (``CatchEnv`` arguments: ``size``, ``balls_per_episode``, ...) say otherwise."""
    env = gym.make("aime_rl/Catch-v0", **{"balls_per_episode": 1, **env_kwargs})
    store = ReplayStore(directory, frame_shape=env.observation_space.shape)
    env.action_space.seed(seed)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        writer = store.begin_episode()
        while True:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            writer.add(obs, action, reward, terminated, truncated)
            obs = next_obs
            if terminated or truncated:
                writer.finish(obs)
                break
    env.close()
    return store


def copy_dir(directory: Path, tmp_path: Path) -> Path:
    """A copy of ``directory`` (a saved model) under ``tmp_path``, to damage or edit."""
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def edit_config(directory: Path, edit) -> None:
    """Apply ``edit(config)`` to the ``config.json`` of ``directory``."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


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
