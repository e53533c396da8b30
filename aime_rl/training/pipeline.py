"""The end-to-end pipeline behind the ``aime-rl`` command: collect → train perception → train agent → evaluate.

Every stage writes under one run directory::

    runs/<name>/
      config.json                 the run's settings
      replay/                     raw frames, actions, rewards (ReplayStore)
      tokenizer/ context_model/   TensorBoard events + checkpoints of each trainer
      model/                      the trained CausalPerceiverIO (safetensors + JSON)
      agent/                      TensorBoard of the SB3 agent, agent.zip, observation_normalization.json
      report.json, report.md      evaluation
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from tqdm.auto import tqdm

from ..envs import load_env_preset
from ..perception import CausalPerceiverIO
from ..replay import ReplayStore, VecRecordFrames
from ..utils.io import atomic_write, atomic_write_json
from .perception import save_model, summarize, train_context_model, train_tokenizer
from .trainer import TrainerConfig


@dataclass
class RunConfig:
    """Everything one pipeline run needs (the CLI fills it from ``experiments/*.toml`` and flags)."""

    name: str = "demo"
    runs_dir: str = "runs"
    env: str = "catch"  # a preset name (aime_rl/envs/presets) or a Gymnasium id with image observations
    preset: str = "small"
    frame_size: int = 64
    seed: int = 0
    # collection
    collect_steps: int = 20_000
    num_envs: int = 8
    # perception training
    sequence_length: int = 8
    tokenizer_steps: int = 600
    context_steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    # world model
    world_model_steps: int = 300
    # agent
    algo: str = "ppo"
    agent_steps: int = 30_000
    window: int = 8
    # Train the agent on standardised context features (agents/normalization.py); evaluate follows the saved agent.
    normalize_observations: bool = True
    agent_kwargs: dict = field(default_factory=dict)
    # evaluation
    eval_episodes: int = 10
    device: str = "cpu"

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def env_spec(env: str) -> dict[str, Any]:
    """Resolve a preset name or env id to ``{"env_id", "make_kwargs", "frame_source"}``."""
    try:
        preset = load_env_preset(env)
    except ValueError:
        preset = {"env_id": env, "make_kwargs": {}, "frame_source": "observation"}
    return preset


def make_env_factory_kwargs(config: RunConfig) -> dict[str, Any]:
    spec = env_spec(config.env)
    return {"env_id": spec["env_id"], "env_kwargs": dict(spec.get("make_kwargs", {}))}


# -- stages -------------------------------------------------------------------------------------------------------


def collect(config: RunConfig, policy: Any = None, progress: bool = True) -> ReplayStore:
    """Run a random policy (or an SB3 ``policy``) for ``collect_steps`` env steps into ``run_dir/replay``."""
    spec = env_spec(config.env)
    venv = make_vec_env(
        spec["env_id"], n_envs=config.num_envs, seed=config.seed, env_kwargs=spec["make_kwargs"]
    )
    size = (config.frame_size, config.frame_size, 3)
    frame_source = "render" if spec.get("frame_source") == "render" else "observation"
    recorder = VecRecordFrames(venv, config.run_dir / "replay", frame_source=frame_source, frame_shape=size)
    obs = recorder.reset()
    venv.action_space.seed(config.seed)
    steps = max(config.collect_steps // config.num_envs, 1)
    for _ in tqdm(range(steps), desc="collect", unit="step", disable=not progress):
        if policy is None:
            actions = np.stack([venv.action_space.sample() for _ in range(config.num_envs)])
        else:
            actions, _ = policy.predict(obs, deterministic=False)
        obs, _, _, _ = recorder.step(actions)
    recorder.close()
    return ReplayStore.open(config.run_dir / "replay")


def trainer_config(config: RunConfig, steps: int) -> TrainerConfig:
    return TrainerConfig(
        steps=steps,
        batch_size=config.batch_size,
        sequence_length=config.sequence_length,
        lr=config.lr,
        warmup_steps=min(50, max(steps // 10, 1)),
        seed=config.seed,
        log_every=max(steps // 50, 1),
        eval_every=max(steps // 4, 1),
        checkpoint_every=max(steps // 2, 1),
        device=config.device,
    )


def build_model(config: RunConfig) -> CausalPerceiverIO:
    """A fresh perception model of ``config.preset`` for frames of ``frame_size``."""
    torch.manual_seed(config.seed)
    shape = (config.sequence_length, 3, config.frame_size, config.frame_size)
    return CausalPerceiverIO.from_preset(config.preset, video_shape=shape)


def train_perception(config: RunConfig) -> tuple[CausalPerceiverIO, dict[str, Any]]:
    """Train the tokenizer, then the context model, on ``run_dir/replay``; saves ``run_dir/model``."""
    model = build_model(config)
    store = config.run_dir / "replay"
    tok_metrics = train_tokenizer(
        model.tokenizer, store, trainer_config(config, config.tokenizer_steps), config.run_dir / "tokenizer"
    )
    ctx_metrics = train_context_model(
        model, store, trainer_config(config, config.context_steps), config.run_dir / "context_model"
    )
    save_model(model, config.run_dir)
    return model, {"tokenizer": summarize(tok_metrics), "context_model": summarize(ctx_metrics)}


def make_context_venv(
    config: RunConfig, model_dir: str | os.PathLike, n_envs: int | None = None, seed: int = 0
):
    """SB3 vec env of ``config.env`` whose observations are the causal context (one batched stream)."""
    from ..wrappers import VecContextObservation

    venv = make_vec_env(n_envs=n_envs or config.num_envs, seed=seed, **make_env_factory_kwargs(config))
    return VecContextObservation(venv, model_dir, window=config.window, device=config.device)


def normalization_path(config: RunConfig) -> Path:
    from ..agents import NORMALIZATION_NAME

    return config.run_dir / "agent" / NORMALIZATION_NAME


def _learn_and_save(config: RunConfig, venv) -> Any:
    """Train ``config.algo`` on ``venv`` (standardised first if ``config.normalize_observations``); saves
    ``agent/agent.zip`` and, with standardisation, ``agent/observation_normalization.json`` just before it.

    The statistics file is there exactly when the saved agent was trained on standardised contexts (a stale file of
    an earlier run is removed), and :func:`evaluate` goes by that file, not by the flag."""
    from ..agents import make_agent, normalize_observations, save_normalization

    if config.normalize_observations:
        venv = normalize_observations(venv)
    agent = make_agent(
        config.algo,
        venv,
        seed=config.seed,
        tensorboard_log=str(config.run_dir / "agent"),
        **config.agent_kwargs,
    )
    agent.learn(total_timesteps=config.agent_steps, progress_bar=False)
    stats = normalization_path(config)
    if config.normalize_observations:
        save_normalization(venv, stats)
    else:
        stats.unlink(missing_ok=True)
    atomic_write(config.run_dir / "agent" / "agent.zip", agent.save)
    return agent


def train_agent(config: RunConfig, model_dir: str | os.PathLike, progress: bool = True):
    """Train an SB3 agent on context observations; saves ``run_dir/agent/agent.zip`` (and the observation
    statistics, see :func:`_learn_and_save`)."""
    venv = make_context_venv(config, model_dir, seed=config.seed)
    agent = _learn_and_save(config, venv)
    venv.close()
    return agent


def train_world_model_stage(config: RunConfig, model_dir: str | os.PathLike):
    """Train the VRNN world model on ``run_dir/replay`` with the frozen perception model; saves
    ``run_dir/world_model/world_model``."""
    from ..world_model import train_world_model

    perceiver = CausalPerceiverIO.from_pretrained(model_dir, map_location=config.device).eval()
    return train_world_model(
        config.run_dir / "replay",
        perceiver,
        trainer_config(config, config.world_model_steps),
        config.run_dir / "world_model",
    )


def world_model_dir(config: RunConfig) -> Path:
    return config.run_dir / "world_model" / "world_model"


def train_agent_in_imagination(config: RunConfig, model_dir: str | os.PathLike):
    """Train an SB3 agent only inside ``WorldModelEnv`` (imagined contexts, rewards and terminations of the VRNN,
    starts sampled from the replay store); saves ``run_dir/agent/agent.zip``. Evaluate it in the real env with
    ``aime-rl evaluate``: its observations (the context) have the same meaning there."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ..world_model import VRNN, WorldModelEnv

    perceiver = CausalPerceiverIO.from_pretrained(model_dir, map_location=config.device).eval()
    vrnn = VRNN.from_pretrained(world_model_dir(config), perceiver).eval()
    store = config.run_dir / "replay"
    venv = DummyVecEnv([lambda: WorldModelEnv(vrnn, store) for _ in range(config.num_envs)])
    venv.seed(config.seed)
    return _learn_and_save(config, venv)


def episode_returns(venv, policy: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` finished episodes on ``venv`` (``policy=None``: uniform random actions)."""
    venv.seed(seed)
    obs = venv.reset()
    venv.action_space.seed(seed)
    returns, current = [], np.zeros(venv.num_envs)
    while len(returns) < episodes:
        if policy is None:
            actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
        else:
            actions, _ = policy.predict(obs, deterministic=True)
        obs, rewards, dones, _ = venv.step(actions)
        current += rewards
        for i in np.flatnonzero(dones):
            returns.append(float(current[i]))
            current[i] = 0.0
    return returns[:episodes]


def evaluate(
    config: RunConfig, model_dir: str | os.PathLike, agent: Any, perception: dict | None = None
) -> dict:
    """Agent vs random-policy returns on context observations, plus perception metrics; writes the report.

    If the agent was trained on standardised contexts (``agent/observation_normalization.json`` exists, see
    :func:`_learn_and_save`) it sees them standardised by those statistics, frozen; otherwise raw."""
    from ..agents import load_normalization

    venv = make_context_venv(config, model_dir, n_envs=min(config.num_envs, 4), seed=config.seed + 1000)
    stats = normalization_path(config)
    if stats.is_file():
        venv = load_normalization(venv, stats)
    agent_returns = episode_returns(venv, agent, config.eval_episodes, seed=config.seed + 1000)
    random_returns = episode_returns(venv, None, config.eval_episodes, seed=config.seed + 1000)
    venv.close()
    report = {
        "env": config.env,
        "preset": config.preset,
        "algo": config.algo,
        "agent_return_mean": float(np.mean(agent_returns)),
        "agent_return_std": float(np.std(agent_returns)),
        "random_return_mean": float(np.mean(random_returns)),
        "random_return_std": float(np.std(random_returns)),
        "episodes": config.eval_episodes,
        "perception": perception or {},
    }
    write_report(config.run_dir, report)
    return report


def write_report(run_dir: Path, report: dict) -> None:
    """``report.json`` and a short ``report.md``."""
    atomic_write_json(run_dir / "report.json", report)
    lines = [
        f"# aime-rl report: {run_dir.name}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| agent return ({report['algo']}) | {report['agent_return_mean']:.2f} ± {report['agent_return_std']:.2f} |",
        f"| random policy return | {report['random_return_mean']:.2f} ± {report['random_return_std']:.2f} |",
    ]
    for part, metrics in report.get("perception", {}).items():
        for key, value in metrics.items():
            lines.append(f"| {part} {key} | {_fmt(value)} |")
    text = "\n".join(lines) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(run_dir / "report.md", write)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def save_run_config(config: RunConfig) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config.run_dir / "config.json", asdict(config))


def run_demo(config: RunConfig, progress: bool = True) -> dict:
    """collect → tokenizer → context model → agent → evaluate, with a printed summary at the end."""
    start = time.time()
    save_run_config(config)
    stages = ["collect", "perception", "agent", "evaluate"]
    print(f"aime-rl demo: {config.env} with the {config.preset!r} preset → {config.run_dir}")
    print(f"[1/{len(stages)}] collecting {config.collect_steps} random-policy steps")
    collect(config, progress=progress)
    print(
        f"[2/{len(stages)}] training the tokenizer ({config.tokenizer_steps} steps) and the context model "
        f"({config.context_steps} steps)"
    )
    _, perception = train_perception(config)
    print(f"[3/{len(stages)}] training {config.algo.upper()} on the context for {config.agent_steps} steps")
    agent = train_agent(config, config.run_dir / "model", progress=progress)
    print(f"[4/{len(stages)}] evaluating on {config.eval_episodes} episodes")
    report = evaluate(config, config.run_dir / "model", agent, perception)
    report["seconds"] = round(time.time() - start, 1)
    atomic_write_json(config.run_dir / "report.json", report)
    print_summary(config, report)
    return report


def print_summary(config: RunConfig, report: dict) -> None:
    tok = report["perception"].get("tokenizer", {})
    ctx = report["perception"].get("context_model", {})
    print("\n== aime-rl demo summary ==")
    print(
        f"agent ({config.algo}) return: {report['agent_return_mean']:.2f} ± {report['agent_return_std']:.2f}   "
        f"random policy: {report['random_return_mean']:.2f} ± {report['random_return_std']:.2f}"
    )
    if tok:
        print(f"tokenizer reconstruction PSNR: {tok.get('psnr', float('nan')):.2f} dB")
    if ctx:
        print(
            f"next-frame token accuracy: {ctx.get('next_frame_accuracy', float('nan')):.3f} "
            f"(copy-last baseline {ctx.get('copy_last_accuracy', float('nan')):.3f}); "
            f"predicted-frame PSNR {ctx.get('predicted_frame_psnr', float('nan')):.2f} dB"
        )
    print(f"report: {config.run_dir / 'report.md'}   ({report.get('seconds', 0):.0f} s)")
    print(f"TensorBoard: tensorboard --logdir {config.run_dir}")
