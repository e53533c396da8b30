"""The pipeline's stages: collect → tokenizer → context model → (world model) → agent → evaluate.

Each stage function takes the run's :class:`RunConfig` and its :class:`RunDir`, writes only its own outputs (see
:mod:`aime_rl.pipeline.rundir`) and returns its manifest. Re-running a finished stage with the same settings is a
no-op that says so; asking for more steps trains further from the last checkpoint; a stage whose inputs changed
underneath it (a retrained tokenizer under a context model) refuses to resume and asks for ``--restart``.
"""

from __future__ import annotations

import inspect
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.utils.tensorboard import SummaryWriter

from ..agents import (
    NORMALIZATION_NAME,
    load_normalization,
    make_agent,
    normalize_observations,
    save_normalization,
)
from ..evaluation import probe_model
from ..perception import CausalPerceiverIO, VQPTTokenizer
from ..replay import ReplayStore, VecRecordFrames
from ..training.perception import summarize, train_context_model, train_tokenizer
from ..training.trainer import TrainerConfig
from ..utils.io import atomic_write, atomic_write_json
from ..world_model import VRNN, WorldModelEnv, train_world_model
from ..wrappers import VecContextObservation
from .config import RunConfig, flag
from .environment import env_spec, make_single_env, make_venv
from .progress import AgentProgress, Progress
from .report import write_report
from .rundir import RunDir, replay_fingerprint, weights_fingerprint

ALGORITHMS = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}
COLLECT_SESSION_SEED_STRIDE = 100_003  # each collect session (a top-up) gets env seeds no earlier one used


def say(message: str) -> None:
    print(message, flush=True)


def seed_everything(config: RunConfig) -> None:
    """Seed Python, NumPy and torch; with ``config.deterministic`` also use deterministic torch kernels and one
    thread (CleanRL's ``torch_deterministic``), so the same command gives the same numbers."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)


# -- collect --------------------------------------------------------------------------------------------------------


def collect(config: RunConfig, run: RunDir, policy: Any = None, progress: bool = True) -> dict[str, Any]:
    """Top the replay up to ``collect_steps`` env steps with a random policy (or an SB3 ``policy``).

    Each session (the first, or a rerun after a kill or with a larger target) uses env seeds that no earlier
    session used, so a rerun never records an episode twice.
    """
    manifest = run.manifest("collect") or {"sessions": 0}
    replay_dir = run.path / "replay"
    have = ReplayStore.open(replay_dir).num_steps if replay_dir.exists() else 0
    if (
        manifest.get("status") == "done"
        and manifest.get("target") == config.collect_steps
        or have >= config.collect_steps
    ):
        say(
            f"collect: the replay already has {have} steps (target {config.collect_steps}); "
            f"--collect-steps N to collect more, --restart to collect again"
        )
        return manifest
    session = int(manifest["sessions"])
    seed = config.seed + COLLECT_SESSION_SEED_STRIDE * session
    run.write_manifest(
        "collect", {**manifest, "status": "running", "sessions": session + 1, "target": config.collect_steps}
    )
    venv = make_venv(config, config.num_envs, seed)
    spec = env_spec(config.env)
    size = (config.frame_size, config.frame_size, 3)
    # Episode keys follow (seed, session): the held-out split (a hash of the key) is the same in every rerun.
    store = ReplayStore(replay_dir, frame_shape=size, writer_token=f"s{config.seed}_c{session}")
    recorder = VecRecordFrames(venv, store, frame_source=spec.frame_source)
    obs = recorder.reset()
    venv.action_space.seed(seed)
    steps = max((config.collect_steps - have) // config.num_envs, 1)
    bar = Progress(steps * config.num_envs, "collect", enabled=progress)
    for _ in range(steps):
        if policy is None:
            actions = np.stack([venv.action_space.sample() for _ in range(config.num_envs)])
        else:
            actions, _ = policy.predict(obs, deterministic=False)
        obs, _, _, _ = recorder.step(actions)
        bar.update(config.num_envs)
    bar.close()
    recorder.close()
    store = ReplayStore.open(replay_dir)
    manifest = {
        "status": "done",
        "sessions": session + 1,
        "target": config.collect_steps,
        "inputs": {"env": config.env, "frame_size": config.frame_size},
        "replay": replay_fingerprint(store),
    }
    run.write_manifest("collect", manifest)
    say(f"collect: {store.num_steps} steps in {len(store)} episodes → {replay_dir}")
    return manifest


def open_replay(run: RunDir) -> ReplayStore:
    if not (run.path / "replay").exists() or run.manifest("collect") is None:
        raise ValueError(
            f"run {run.path.name!r} has no replay: run `aime-rl collect --name {run.path.name}` first"
        )
    return ReplayStore.open(run.path / "replay")


# -- perception -----------------------------------------------------------------------------------------------------


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
    """A fresh perception model of ``config.preset`` for frames of ``frame_size`` (initialised from the seed)."""
    torch.manual_seed(config.seed)
    shape = (config.sequence_length, 3, config.frame_size, config.frame_size)
    return CausalPerceiverIO.from_preset(config.preset, video_shape=shape)


def finished(manifest: dict | None, stage_command: str, steps: int, steps_flag: str) -> bool:
    """True (after saying so) when the stage already trained exactly ``steps``; ``ValueError`` when it trained
    more than asked (fewer steps cannot be had by resuming)."""
    if not manifest or manifest.get("status") != "done":
        return False
    trained = int(manifest.get("steps", 0))
    if trained == steps:
        say(
            f"{stage_command}: already trained {trained} steps; {steps_flag} N to train further, --restart to start over"
        )
        return True
    if trained > steps:
        raise ValueError(
            f"already trained {trained} steps, more than {steps_flag} {steps}; --restart to train again from scratch"
        )
    say(f"{stage_command}: training further, from {trained} to {steps} steps")
    return False


def refuse_changed_inputs(
    manifest: dict | None, inputs: dict[str, Any], stage_command: str, key: str, what: str
):
    """Refuse to resume a stage whose upstream artifact ``key`` changed since it was made."""
    if manifest and manifest.get("inputs", {}).get(key) not in (None, inputs[key]):
        raise ValueError(
            f"the {what} changed since {stage_command} last ran on it; `{stage_command} --restart` trains again on "
            f"the new {what}"
        )


def log_replay_change(manifest: dict | None, replay: dict[str, int], stage_command: str) -> None:
    """A larger replay is a change of inputs that resuming applies: say so."""
    before = (manifest or {}).get("inputs", {}).get("replay")
    if before and before != replay:
        say(
            f"{stage_command}: the replay changed since the last run ({before['steps']} → {replay['steps']} steps); "
            "training continues on the new replay"
        )


def begin_training_stage(
    run: RunDir,
    stage: str,
    command: str,
    steps: int,
    steps_flag: str,
    inputs: dict[str, Any],
    upstream: tuple[str, str] | None = None,
) -> dict[str, Any] | None:
    """The common start of a training stage: refuse a changed ``upstream`` artifact ``(input key, what)``, return
    the manifest when the stage already trained ``steps`` (a no-op), else say what changed in the replay, mark the
    stage running and return ``None``."""
    manifest = run.manifest(stage)
    if upstream:
        refuse_changed_inputs(manifest, inputs, command, *upstream)
    if finished(manifest, command, steps, steps_flag):
        return manifest
    log_replay_change(manifest, inputs["replay"], command)
    run.write_manifest(stage, {"status": "running", "steps": steps, "inputs": inputs})
    return None


def train_tokenizer_stage(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Train the tokenizer on the replay; saves ``tokenizer/model``."""
    store = open_replay(run)
    inputs = {"replay": replay_fingerprint(store)}
    done = begin_training_stage(
        run, "tokenizer", "train-tokenizer", config.tokenizer_steps, "--tokenizer-steps", inputs
    )
    if done:
        return done
    model = build_model(config)
    logdir = run.path / "tokenizer"
    metrics = train_tokenizer(
        model.tokenizer, store.directory, trainer_config(config, config.tokenizer_steps), logdir
    )
    model.tokenizer.save_pretrained(logdir / "model")
    manifest = {
        "status": "done",
        "steps": config.tokenizer_steps,
        "inputs": inputs,
        "outputs": {"tokenizer": weights_fingerprint(logdir / "model")},
        "metrics": summarize(metrics),
    }
    run.write_manifest("tokenizer", manifest)
    say(
        f"train-tokenizer: reconstruction PSNR {manifest['metrics'].get('psnr', float('nan')):.2f} dB → {logdir / 'model'}"
    )
    return manifest


def require_done(run: RunDir, stage: str, command: str) -> dict[str, Any]:
    manifest = run.manifest(stage)
    if not manifest or manifest.get("status") != "done":
        what = {"context": "context model", "world_model": "world model"}.get(stage, stage)
        raise ValueError(
            f"run {run.path.name!r} has no finished {what}: run `aime-rl {command} --name {run.path.name}` first"
        )
    return manifest


def train_context_stage(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Train the context model (the tokenizer of ``train-tokenizer``, frozen); saves ``model/``."""
    require_done(run, "tokenizer", "train-tokenizer")
    store = open_replay(run)
    tokenizer_dir = run.path / "tokenizer" / "model"
    inputs = {"tokenizer": weights_fingerprint(tokenizer_dir), "replay": replay_fingerprint(store)}
    done = begin_training_stage(
        run,
        "context",
        "train-context",
        config.context_steps,
        "--context-steps",
        inputs,
        ("tokenizer", "tokenizer"),
    )
    if done:
        return done
    model = build_model(config)
    model.tokenizer.load_state_dict(VQPTTokenizer.from_pretrained(tokenizer_dir).state_dict())
    logdir = run.path / "context_model"
    config_steps = trainer_config(config, config.context_steps)
    metrics = train_context_model(
        model, store.directory, config_steps, logdir, token_cache=logdir / "token_cache"
    )
    model.save_pretrained(run.path / "model")
    manifest = {
        "status": "done",
        "steps": config.context_steps,
        "inputs": inputs,
        "outputs": {"model": weights_fingerprint(run.path / "model")},
        "metrics": summarize(metrics),
    }
    run.write_manifest("context", manifest)
    say(f"train-context: {format_context_metrics(manifest['metrics'])} → {run.path / 'model'}")
    return manifest


def format_context_metrics(metrics: dict[str, Any]) -> str:
    accuracy, copy_last = (
        metrics.get("next_frame_accuracy", float("nan")),
        metrics.get("copy_last_accuracy", float("nan")),
    )
    verdict = "above" if accuracy > copy_last else "NOT above"
    return f"next-frame token accuracy {accuracy:.3f}, {verdict} the copy-last baseline {copy_last:.3f}"


def model_dir(run: RunDir) -> Path:
    require_done(run, "context", "train-context")
    return run.path / "model"


# -- world model ----------------------------------------------------------------------------------------------------


def world_model_dir(run: RunDir) -> Path:
    return run.path / "world_model" / "world_model"


def train_world_model_stage(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Train the VRNN world model on the replay with the frozen perception model; saves ``world_model/``."""
    perception_dir = model_dir(run)
    store = open_replay(run)
    inputs = {"model": weights_fingerprint(perception_dir), "replay": replay_fingerprint(store)}
    done = begin_training_stage(
        run,
        "world_model",
        "train-world-model",
        config.world_model_steps,
        "--world-model-steps",
        inputs,
        ("model", "perception model"),
    )
    if done:
        return done
    perceiver = CausalPerceiverIO.from_pretrained(perception_dir, map_location=config.device).eval()
    train_world_model(
        store.directory, perceiver, trainer_config(config, config.world_model_steps), run.path / "world_model"
    )
    manifest = {
        "status": "done",
        "steps": config.world_model_steps,
        "inputs": inputs,
        "outputs": {"world_model": weights_fingerprint(world_model_dir(run))},
    }
    run.write_manifest("world_model", manifest)
    say(f"train-world-model: → {world_model_dir(run)}")
    return manifest


# -- agent ----------------------------------------------------------------------------------------------------------


def make_context_venv(
    config: RunConfig,
    perception_dir: str | os.PathLike,
    n_envs: int,
    seed: int,
    window: int,
    training: bool = True,
):
    """SB3 vec env of ``config.env`` whose observations are the causal context (one batched stream)."""
    venv = make_venv(config, n_envs, seed, training=training)
    return VecContextObservation(venv, perception_dir, window=window, device=config.device)


def check_agent_kwargs(algo: str, kwargs: dict[str, Any]) -> None:
    """Unknown SB3 arguments are refused before anything is written."""
    accepted = set(inspect.signature(ALGORITHMS[algo].__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{algo.upper()} has no setting {', '.join(unknown)} (--agent-kwarg / agent_kwargs)")


def agent_settings(config: RunConfig, in_imagination: bool) -> dict[str, Any]:
    """What an agent is, besides its weights; saved as ``agent/agent.json`` and read back by ``evaluate``."""
    return {
        "algo": config.algo,
        "steps": config.agent_steps,
        "window": config.window,
        "env": config.env,
        "frame_size": config.frame_size,
        "normalize_observations": config.normalize_observations,
        "in_imagination": in_imagination,
        "agent_kwargs": config.agent_kwargs,
        "seed": config.seed,
    }


def train_agent_stage(config: RunConfig, run: RunDir, in_imagination: bool = False, progress: bool = True):
    """Train an SB3 agent on the context (or only inside the world model); saves ``agent/``."""
    perception_dir = model_dir(run)
    inputs = {"model": weights_fingerprint(perception_dir)}
    if in_imagination:
        require_done(run, "world_model", "train-world-model")
        inputs["world_model"] = weights_fingerprint(world_model_dir(run))
    settings = agent_settings(config, in_imagination)
    manifest = run.manifest("agent")
    if manifest and manifest.get("status") == "done":
        if manifest.get("inputs") == inputs and manifest.get("settings") == settings:
            say(
                f"train-agent: already trained {config.algo} for {config.agent_steps} steps; --restart to train again"
            )
            return manifest
        changed = "perception model" if manifest.get("inputs") != inputs else "settings"
        raise ValueError(
            f"run {run.path.name!r} already has an agent trained with other {changed}; "
            "`train-agent --restart` replaces it"
        )
    check_agent_kwargs(config.algo, config.agent_kwargs)
    run.write_manifest("agent", {"status": "running", "inputs": inputs, "settings": settings})
    if in_imagination:
        perceiver = CausalPerceiverIO.from_pretrained(perception_dir, map_location=config.device).eval()
        vrnn = VRNN.from_pretrained(world_model_dir(run), perceiver).eval()
        replay_dir = open_replay(run).directory
        venv = DummyVecEnv([lambda: WorldModelEnv(vrnn, replay_dir) for _ in range(config.num_envs)])
        venv.seed(config.seed)
    else:
        venv = make_context_venv(config, perception_dir, config.num_envs, config.seed, config.window)
    learn_and_save(config, run, venv, progress)
    venv.close()
    manifest = {"status": "done", "inputs": inputs, "settings": settings}
    atomic_write_json(run.path / "agent" / "agent.json", {**settings, "inputs": inputs})
    run.write_manifest("agent", manifest)
    say(f"train-agent: → {run.path / 'agent' / 'agent.zip'}")
    return manifest


def learn_and_save(config: RunConfig, run: RunDir, venv, progress: bool) -> Any:
    """Train ``config.algo`` on ``venv`` (standardised first if ``config.normalize_observations``); saves
    ``agent/agent.zip`` and, with standardisation, ``agent/observation_normalization.json`` just before it.

    The statistics file is there exactly when the saved agent was trained on standardised contexts (a stale file of
    an earlier run is removed), and :func:`evaluate` goes by that file."""
    if config.normalize_observations:
        venv = normalize_observations(venv)
    agent = make_agent(
        config.algo,
        venv,
        seed=config.seed,
        device=config.device,
        tensorboard_log=str(run.path / "agent"),
        **config.agent_kwargs,
    )
    agent.learn(
        total_timesteps=config.agent_steps, callback=AgentProgress(config.agent_steps, enabled=progress)
    )
    stats = run.path / "agent" / NORMALIZATION_NAME
    if config.normalize_observations:
        save_normalization(venv, stats)
    else:
        stats.unlink(missing_ok=True)
    atomic_write(run.path / "agent" / "agent.zip", agent.save)
    return agent


def load_agent(run: RunDir, device: str = "cpu"):
    """The run's trained agent and its settings (``agent/agent.json``)."""
    manifest = require_done(run, "agent", "train-agent")
    settings = manifest["settings"]
    return ALGORITHMS[settings["algo"]].load(run.path / "agent" / "agent.zip", device=device), settings


# -- evaluate -------------------------------------------------------------------------------------------------------


def episode_returns(
    venv, policy: Any, episodes: int, seed: int, what: str = "evaluate", progress: bool = True
) -> list[float]:
    """Returns of ``episodes`` finished episodes on ``venv`` (``policy=None``: uniform random actions)."""
    venv.seed(seed)
    obs = venv.reset()
    venv.action_space.seed(seed)
    returns, current = [], np.zeros(venv.num_envs)
    bar = Progress(episodes, what, unit="episodes", enabled=progress, every_fraction=0.25)
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
            if len(returns) <= episodes:
                bar.update()
    bar.close()
    return returns[:episodes]


def evaluate(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """The agent against a random policy on the env it was trained for, with the window it was trained with.

    If the agent was trained on standardised contexts (``agent/observation_normalization.json``), it sees them
    standardised by those frozen statistics. Writes ``report.json`` / ``report.md`` and TensorBoard scalars
    (``eval/agent_return``, ``eval/random_return`` under ``agent/``).
    """
    start = time.time()
    perception_dir = model_dir(run)
    agent, settings = load_agent(run, config.device)
    agent_manifest = run.manifest("agent")
    if agent_manifest["inputs"]["model"] != weights_fingerprint(perception_dir):
        raise ValueError(
            "the perception model changed since the agent was trained; `train-agent --restart` first"
        )
    seed = config.seed + 1000
    venv = make_context_venv(
        config, perception_dir, min(config.num_envs, 4), seed, settings["window"], training=False
    )
    stats = run.path / "agent" / NORMALIZATION_NAME
    if stats.is_file():
        venv = load_normalization(venv, stats)
    agent_returns = episode_returns(venv, agent, config.eval_episodes, seed, "evaluate (agent)", progress)
    random_returns = episode_returns(venv, None, config.eval_episodes, seed, "evaluate (random)", progress)
    venv.close()
    report = {
        "name": run.path.name,
        "env": config.env,
        "preset": config.preset,
        "frame_size": config.frame_size,
        "seed": config.seed,
        "algo": settings["algo"],
        "window": settings["window"],
        "steps": {
            "collect": (run.manifest("collect") or {}).get("replay", {}).get("steps"),
            "tokenizer": (run.manifest("tokenizer") or {}).get("steps"),
            "context_model": (run.manifest("context") or {}).get("steps"),
            "agent": settings["steps"],
        },
        "agent_return_mean": float(np.mean(agent_returns)),
        "agent_return_std": float(np.std(agent_returns)),
        "random_return_mean": float(np.mean(random_returns)),
        "random_return_std": float(np.std(random_returns)),
        "episodes": config.eval_episodes,
        "perception": {
            "tokenizer": (run.manifest("tokenizer") or {}).get("metrics", {}),
            "context_model": (run.manifest("context") or {}).get("metrics", {}),
        },
        "evaluation_seconds": round(time.time() - start, 1),
    }
    log_evaluation(run, report)
    write_report(run.path, report)
    say(
        f"evaluate: agent {report['agent_return_mean']:.2f}, random {report['random_return_mean']:.2f} "
        f"→ {run.path / 'report.md'}"
    )
    return report


def log_evaluation(run: RunDir, report: dict[str, Any]) -> None:
    """The agent's and the random policy's mean return as TensorBoard scalars at the agent's training steps."""
    with SummaryWriter(str(run.path / "agent" / "evaluation")) as writer:
        step = int(report["steps"]["agent"])
        writer.add_scalar("eval/agent_return", report["agent_return_mean"], step)
        writer.add_scalar("eval/random_return", report["random_return_mean"], step)


# -- probe ----------------------------------------------------------------------------------------------------------


def probe_representations(config: RunConfig, has_world_model: bool) -> tuple[str, ...]:
    """The representations ``probe`` asks for: ``--probe-representations``, plus the belief features when the run
    has a world model and the list is the default one. ``ValueError`` for "belief" without a world model."""
    names = config.probe_representation_names()
    default = RunConfig.__dataclass_fields__["probe_representations"].default
    if has_world_model and config.probe_representations == default:
        names += ("belief",)
    if "belief" in names and not has_world_model:
        raise ValueError(
            f"{flag('probe_representations')}: 'belief' needs the run's world model (run train-world-model first)"
        )
    return names


def probe(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """Linear probes of what the run's context knows about the env's true state (AtariARI protocol), beside the
    baselines (untrained model, random CNN, pixels, frame stack, majority class) and, when the run has a world
    model, the belief features. Writes ``probe.json``, ``probe.md`` and TensorBoard scalars under ``probe/``."""
    perception_dir = model_dir(run)
    world_model = None
    if (run.manifest("world_model") or {}).get("status") == "done":
        perceiver = CausalPerceiverIO.from_pretrained(perception_dir, map_location=config.device).eval()
        world_model = VRNN.from_pretrained(world_model_dir(run), perceiver).eval()
    names = probe_representations(config, world_model is not None)
    cut = f", episodes cut at {config.probe_episode_steps} frames" if config.probe_episode_steps else ""
    say(f"probe: {config.probe_steps} random-policy frames of {config.env}{cut}, window {config.window}")
    report = probe_model(
        perception_dir,
        lambda: make_single_env(config),
        steps=config.probe_steps,
        window=config.window,
        world_model=world_model,
        representations=names,
        max_episode_steps=config.probe_episode_steps or None,
        seed=config.seed,
        device=config.device,
        logdir=run.path / "probe",
    )
    report.to_json(run.path / "probe.json")
    markdown = report.to_markdown()
    atomic_write(run.path / "probe.md", lambda tmp: Path(tmp).write_text(markdown))
    say(markdown)
    return {"probe": str(run.path / "probe.json")}
