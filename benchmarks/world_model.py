"""Benchmark the VRNN world model on the built-in Catch env: speed, open-loop quality, mixture usage.

Pipeline (everything on CPU, in a temporary directory):

1. collect random-policy episodes of ``aime_rl/Catch-v0`` into a replay store (train) and a second store (held out);
2. perception: ``--perceiver DIR`` loads a trained :class:`CausalPerceiverIO`; otherwise the "small" preset is
   built and only its tokenizer (per-frame 2D convs behind a 2×2 patchify stem, 4 heads × 128 codes; LPIPS off)
   is trained for ``--tokenizer-steps`` (AdamW; the Perceiver context stays untrained — it is still a
   deterministic causal feature of the frames); the tokenizer's reconstruction PSNR on held-out frames is the
   ceiling of any open-loop prediction decoded through it;
3. world model: :func:`train_world_model` (the shared Trainer, replay windows, perception recomputed every step)
   for ``--steps`` steps, with the VRNN's open-loop loss over ``--open-loop-steps`` imagined frames (``0``: the
   plain ELBO); ``train/active_components`` is read back from TensorBoard;
4. throughput: training sequences/s with perception (the Trainer path) and with perception precomputed (the
   VRNN alone); imagination steps/s at batch 64 (latent only, and with the frame head's tokens);
5. open loop on held-out episodes: observe ``k`` frames, predict ``H`` with the real actions, PSNR per step of
   the decoded prediction against the "copy the last observed frame" baseline and the tokenizer ceiling.

Usage: ``python benchmarks/world_model.py [--quick] [--perceiver DIR] [--steps N] [--tokenizer-steps N]
[--open-loop-steps N] [--diversity-weight W] [--episodes N] [--threads 1]``. Prints the machine and markdown
tables.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayStore
from aime_rl.training import TrainerConfig
from aime_rl.world_model.imagination import copy_last_psnr, imagine, open_loop_rollout, psnr_per_step
from aime_rl.world_model.training import train_world_model
from aime_rl.world_model.vrnn import VRNN

ENV_ID = "aime_rl/Catch-v0"
IMAGINE_BATCH = 64
IMAGINE_HORIZON = 32

SETTINGS = {
    "quick": dict(
        episodes=8, holdout_episodes=3, tokenizer_steps=30, steps=40, batch_size=8, sequence_length=12
    ),
    "full": dict(
        episodes=30, holdout_episodes=6, tokenizer_steps=1000, steps=300, batch_size=8, sequence_length=16
    ),
}
VRNN_KWARGS = dict(hidden_dim=128, latent_dim=16, embed_dim=128, mlp_dim=128, decoder_channels=32)
TOKENIZER_LR = 2e-3


def machine_info() -> str:
    return (
        f"{platform.platform()} · CPU {platform.processor() or platform.machine()} · Python "
        f"{platform.python_version()} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
        f"{datetime.date.today()}"
    )


def collect(directory: Path, episodes: int, seed: int) -> ReplayStore:
    """Random-policy Catch episodes (10 balls, ~135 steps each) into a new store."""
    store = ReplayStore(directory)
    env = gym.make(ENV_ID)
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
    return store


def build_perceiver(args, store: ReplayStore) -> tuple[CausalPerceiverIO, float]:
    """Load ``--perceiver`` or train the small preset's tokenizer; returns (model in eval mode, seconds)."""
    start = time.perf_counter()
    if args.perceiver:
        return CausalPerceiverIO.from_pretrained(args.perceiver).eval(), time.perf_counter() - start
    torch.manual_seed(0)
    overrides = {} if args.diversity_weight is None else {"diversity_weight": args.diversity_weight}
    perceiver = CausalPerceiverIO.from_preset(
        "small", video_shape=(8, 3, 64, 64), perceptual_weight=0.0, **overrides
    )
    tokenizer = perceiver.tokenizer.train()
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=TOKENIZER_LR)
    rng = np.random.default_rng(0)
    for _ in range(args.tokenizer_steps):
        frames = store.sample_windows(8, 4, rng)["frames"]
        loss = tokenizer.loss(frames)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return perceiver.eval(), time.perf_counter() - start


@torch.no_grad()
def tokenizer_ceiling_psnr(vrnn: VRNN, frames: torch.Tensor) -> float:
    """PSNR of the tokenizer's own reconstruction (encode → decode) of ``frames``: the ceiling of predictions."""
    decoded = vrnn.decode_tokens(vrnn.tokenize(frames))
    return float(psnr_per_step(frames, decoded).mean())


def train_throughput(
    vrnn: VRNN, store: ReplayStore, batch_size: int, length: int, repeats: int
) -> tuple[float, float]:
    """Training sequences/s: (perception recomputed each step, perception precomputed)."""
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=1e-4)
    rng = np.random.default_rng(123)
    batches = [store.sample_windows(batch_size, length, rng) for _ in range(repeats)]

    def step(batch, **given):
        out = vrnn(batch["frames"] if not given else None, batch["actions"], batch["rewards"], batch["terminated"],
                   is_last=batch["is_last"], **given)  # fmt: skip
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()

    vrnn.train()
    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    with_perception = repeats * batch_size / (time.perf_counter() - start)
    cached = [dict(zip(("tokens", "context"), vrnn.perceive(b["frames"]), strict=True)) for b in batches]
    start = time.perf_counter()
    for _ in range(5):
        for batch, given in zip(batches, cached, strict=True):
            step(batch, **given)
    vrnn_only = 5 * repeats * batch_size / (time.perf_counter() - start)
    return with_perception, vrnn_only


@torch.no_grad()
def imagination_throughput(vrnn: VRNN, store: ReplayStore) -> tuple[float, float]:
    """Imagined steps/s at batch 64: latent only, and with the frame head's argmax tokens."""
    vrnn.eval()
    batch = store.sample_windows(IMAGINE_BATCH, 4, np.random.default_rng(7))
    start_state = vrnn.observe(batch["frames"], batch["actions"])["last"]
    actions = torch.randint(0, vrnn.config.action_dim, (IMAGINE_BATCH, IMAGINE_HORIZON))
    rates = []
    for predict_tokens in (False, True):
        imagine(vrnn, start_state, 2, actions=actions[:, :2], predict_tokens=predict_tokens)  # warm-up
        start = time.perf_counter()
        imagine(vrnn, start_state, IMAGINE_HORIZON, actions=actions, predict_tokens=predict_tokens)
        rates.append(IMAGINE_BATCH * IMAGINE_HORIZON / (time.perf_counter() - start))
    return rates[0], rates[1]


@torch.no_grad()
def open_loop_table(vrnn: VRNN, holdout: ReplayStore, observe_k: int, horizon: int, count: int):
    """Per-step PSNR of the model and of copy-last, on ``count`` held-out windows; plus the tokenizer ceiling."""
    vrnn.eval()
    batch = holdout.sample_windows(count, observe_k + horizon, np.random.default_rng(11))
    frames = batch["frames"].float() / 255
    model = []
    for rows in torch.split(torch.arange(count), 8):
        rollout = open_loop_rollout(vrnn, frames[rows], batch["actions"][rows], observe_k, horizon)
        model.append(psnr_per_step(frames[rows, observe_k:], rollout["predicted"]) * len(rows))
    model_psnr = torch.stack(model).sum(0) / count
    baseline = copy_last_psnr(frames, observe_k, horizon)
    ceiling = tokenizer_ceiling_psnr(vrnn, frames[:8])
    return model_psnr, baseline, ceiling


def active_components_history(logdir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/active_components" not in events.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in events.Scalars("train/active_components")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small run (a few minutes on a loaded 2-core CPU)"
    )
    parser.add_argument("--perceiver", default=None, help="a trained CausalPerceiverIO directory")
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--tokenizer-steps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="world-model training steps")
    parser.add_argument(
        "--diversity-weight",
        type=float,
        default=None,
        help="the tokenizer's codebook diversity-loss weight (default: the small preset's)",
    )
    parser.add_argument(
        "--open-loop-steps",
        type=int,
        default=4,
        help="imagined frames of the VRNN's open-loop loss (VRNNConfig.open_loop_steps; 0: plain ELBO)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)"
    )
    parser.add_argument("--observe", type=int, default=5, help="observed frames k of the open-loop eval")
    parser.add_argument("--horizon", type=int, default=10, help="predicted frames H of the open-loop eval")
    args = parser.parse_args()
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    for name in ("episodes", "tokenizer_steps", "steps"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    args.tokenizer_steps = settings["tokenizer_steps"]
    torch.set_num_threads(args.threads)
    print(machine_info())
    vrnn_kwargs = dict(VRNN_KWARGS, action_dim=3, open_loop_steps=args.open_loop_steps)
    weight = "the preset's" if args.diversity_weight is None else args.diversity_weight
    tokenizer = "loaded" if args.perceiver else f"small preset, diversity_weight {weight}"
    print(f"settings: {settings} · tokenizer {tokenizer} · VRNN {vrnn_kwargs} · K = 15\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tick = time.perf_counter()
        store = collect(tmp / "train", settings["episodes"], seed=0)
        holdout = collect(tmp / "holdout", settings["holdout_episodes"], seed=10_000)
        print(
            f"collected {store.num_rows} train / {holdout.num_rows} held-out rows in {time.perf_counter() - tick:.1f} s"
        )
        perceiver, seconds = build_perceiver(args, store)
        print(f"perception ready in {seconds:.0f} s ({'loaded' if args.perceiver else 'tokenizer trained'})")

        config = TrainerConfig(
            steps=settings["steps"],
            batch_size=settings["batch_size"],
            sequence_length=settings["sequence_length"],
            lr=1e-3,
            warmup_steps=min(20, settings["steps"] // 4),
            log_every=max(1, settings["steps"] // 8),
            eval_every=0,
            checkpoint_every=0,
            holdout_fraction=0.0,
            amp_bf16=False,
        )
        tick = time.perf_counter()
        vrnn = train_world_model(store.directory, perceiver, config, tmp / "run", vrnn_kwargs, progress=False)
        train_seconds = time.perf_counter() - tick
        history = active_components_history(tmp / "run")
        model_psnr, baseline, ceiling = open_loop_table(vrnn, holdout, args.observe, args.horizon, count=16)
        with_perception, vrnn_only = train_throughput(
            vrnn, store, settings["batch_size"], settings["sequence_length"], repeats=3
        )
        latent_rate, token_rate = imagination_throughput(vrnn, store)

    b, t = settings["batch_size"], settings["sequence_length"]
    print(
        f"\n### Speed (world-model training: {settings['steps']} steps in {train_seconds:.0f} s, evals off)\n"
    )
    print("| measure | value |\n|---|---|")
    print(f"| training, perception each step (B={b}, T={t}) | {with_perception:.2f} sequences/s |")
    print(f"| training, perception precomputed (VRNN only) | {vrnn_only:.1f} sequences/s |")
    print(f"| imagination, batch {IMAGINE_BATCH}, latent only | {latent_rate:,.0f} imagined steps/s |")
    print(f"| imagination, batch {IMAGINE_BATCH}, + frame-head tokens | {token_rate:,.0f} imagined steps/s |")

    print(f"\n### Open-loop PSNR (dB), {args.observe} observed frames, 16 held-out windows\n")
    print(f"tokenizer reconstruction (ceiling of any decoded prediction): {ceiling:.2f} dB\n")
    print("| step | model | copy last frame | model − copy |\n|---|---|---|---|")
    for i in range(args.horizon):
        diff = float(model_psnr[i] - baseline[i])
        print(f"| {i + 1} | {float(model_psnr[i]):.2f} | {float(baseline[i]):.2f} | {diff:+.2f} |")
    print(
        f"| mean | {float(model_psnr.mean()):.2f} | {float(baseline.mean()):.2f} | "
        f"{float(model_psnr.mean() - baseline.mean()):+.2f} |"
    )

    print(f"\n### Active mixture components (pi_k > 0.01, of K = {vrnn.config.max_components})\n")
    print("| step | active components |\n|---|---|")
    for step, value in history:
        print(f"| {step} | {value:.2f} |")


if __name__ == "__main__":
    main()
