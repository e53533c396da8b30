"""The ``evaluate`` stage (the agent against a random policy) and the ``probe`` stage (linear probes of what the
context knows about the env's true state)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from ..agents import NORMALIZATION_NAME, load_normalization
from ..evaluation import LabelledFrames, ProbeConfig, collect_labelled, default_label_fn, probe_model
from ..evaluation.probes import PROTOCOL_VERSION
from ..perception import CausalPerceiverIO
from ..utils.io import atomic_write
from ..world_model import VRNN
from .agent_stage import load_agent, make_context_venv
from .config import RunConfig, flag
from .environment import make_single_env, make_venv
from .progress import Progress
from .report import write_report
from .rundir import RunDir, file_sha256, weights_fingerprint
from .stage_common import model_dir, say, world_model_dir

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


def evaluation_envs(config: RunConfig) -> int:
    """Envs the evaluation runs in parallel: ``num_envs``, or ``eval_episodes`` when fewer (then each env plays
    one episode, all at once: one batched context step serves every episode)."""
    return max(1, min(config.num_envs, config.eval_episodes))


def agent_and_env(
    config: RunConfig, run: RunDir, n_envs: int, seed: int
) -> tuple[Any, VecEnv, dict[str, Any]]:
    """The run's trained agent, ``n_envs`` envs of ``config.env`` (seeded from ``seed``) whose observations are what
    it was trained on — the context of the run's perception model over the agent's window, standardised by the
    saved statistics where it was trained on standardised contexts — and the agent's settings (``agent.json``).
    ``ValueError`` where the perception model changed since the agent was trained or the statistics are missing."""
    perception_dir = model_dir(run)
    agent, settings = load_agent(run, config.device)
    if run.manifest("agent")["inputs"]["model"] != weights_fingerprint(perception_dir):
        raise ValueError(
            "the perception model changed since the agent was trained (or its file is damaged); "
            "`train-agent --restart` trains an agent on it"
        )
    venv = make_context_venv(config, perception_dir, n_envs, seed, settings["window"], training=False)
    stats = run.path / "agent" / NORMALIZATION_NAME
    if settings.get("normalize_observations", stats.is_file()):  # older agents: the file says
        if not stats.is_file():
            venv.close()
            raise ValueError(
                f"the agent was trained on standardised contexts and their statistics are missing ({stats}); "
                "`train-agent --restart` trains it again"
            )
        venv = load_normalization(venv, stats)
    return agent, venv, settings


def load_trained_agent(
    run_dir: str | Path, n_envs: int = 1, seed: int = 0, device: str = "cpu"
) -> tuple[Any, VecEnv]:
    """The SB3 agent of a finished run (``aime-rl train-agent``) and ``n_envs`` envs that show it what it was
    trained on (see :func:`agent_and_env`): observations ``[n_envs, context_dim]``, one batched context stream.

    ``agent.predict(obs)`` on them plays as ``aime-rl evaluate`` does::

        agent, venv = load_trained_agent("runs/demo")
        obs = venv.reset()
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, done, info = venv.step(action)

    ``ValueError`` for a directory that is not a run, or a run without a finished agent (naming the command)."""
    run = RunDir(Path(run_dir))
    config = run.stored_config()
    if config is None:
        raise ValueError(f"{run_dir} is not an aime-rl run (no {run.config_path.name})")
    agent, venv, _ = agent_and_env(replace(config, device=device), run, n_envs, seed)
    return agent, venv


def evaluate(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """The agent against a random policy on the env it was trained for, with the window it was trained with.

    If the agent was trained on standardised contexts (``agent/observation_normalization.json``), it sees them
    standardised by those frozen statistics. Writes ``report.json`` / ``report.md`` and TensorBoard scalars
    (``eval/agent_return``, ``eval/random_return`` under ``agent/evaluation/``). Measures again on every call.
    """
    start = time.time()
    seed = config.seed + 1000
    envs = evaluation_envs(config)
    agent, venv, settings = agent_and_env(config, run, envs, seed)
    agent_returns = episode_returns(venv, agent, config.eval_episodes, seed, "evaluate (agent)", progress)
    venv.close()
    # the same envs and seeds without the context stream: a random policy does not look at its observations
    venv = make_venv(config, envs, seed, training=False)
    random_returns = episode_returns(venv, None, config.eval_episodes, seed, "evaluate (random)", progress)
    venv.close()
    report = {
        "name": run.path.name,
        "env": config.env,
        "preset": config.preset,
        "frame_size": config.frame_size,
        "frame_height": config.frame_shape[0],
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
    """The representations ``probe`` asks for: ``--probe-representations``, plus the belief features whenever the
    run has a world model (what its world model adds to the context is the point of probing it). ``ValueError`` for
    "belief" without a world model."""
    names = config.probe_representation_names()
    if has_world_model and "belief" not in names:
        names += ("belief",)
    if "belief" in names and not has_world_model:
        raise ValueError(
            f"{flag('probe_representations')}: 'belief' needs the run's world model (run train-world-model first)"
        )
    return names


def probe(config: RunConfig, run: RunDir, progress: bool = True, verbose: bool = True) -> dict[str, Any]:
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
        None,
        window=config.window,
        world_model=world_model,
        representations=names,
        seed=config.seed,
        data=labelled_probe_frames(config),
        device=config.device,
        logdir=run.path / "probe",
    )
    report.to_json(run.path / "probe.json")
    markdown = report.to_markdown()
    atomic_write(run.path / "probe.md", lambda tmp: Path(tmp).write_text(markdown))
    outputs = {"probe": file_sha256(run.path / "probe.json")}
    run.write_manifest("probe", {"status": "done", "inputs": probe_inputs(config, run), "outputs": outputs})
    say(markdown if verbose else f"probe: → {run.path / 'probe.md'}")
    return {"probe": str(run.path / "probe.json")}


def probe_protocol() -> dict[str, Any]:
    """The probe's protocol: its code's version and :class:`~aime_rl.evaluation.ProbeConfig`'s defaults, as JSON reads
    them back. A probe made by another version (or with other defaults) is measured again."""
    defaults = {k: v for k, v in asdict(ProbeConfig()).items() if k not in ("seed", "device")}
    return json.loads(json.dumps({"version": PROTOCOL_VERSION, **defaults}))


def probe_inputs(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """What a probe of the run measures and how: the weights it reads (the context model's, the world model's) and
    the settings it uses (the env and window it probes, which ``aime-rl probe --env/--window`` may choose for it)."""
    world_model = world_model_dir(run) / "model.safetensors"
    return {
        "model": weights_fingerprint(run.path / "model"),
        "world_model": file_sha256(world_model) if world_model.is_file() else None,
        "settings": {
            key: getattr(config, key)
            for key in (
                "env",
                "window",
                "seed",
                "probe_steps",
                "probe_episode_steps",
                "probe_representations",
                "device",
            )
        },
        "probe_protocol": probe_protocol(),
    }


def probe_is_current(config: RunConfig, run: RunDir) -> bool:
    """Whether the run's ``probe.json`` is the one a probe with ``config`` would write now: made (its manifest says)
    of these weights with these settings, and not changed since."""
    manifest = run.manifest("probe") or {}
    path = run.path / "probe.json"
    return (
        manifest.get("inputs") == probe_inputs(config, run)
        and path.is_file()
        and manifest.get("outputs", {}).get("probe") == file_sha256(path)
    )


def no_state_message(config: RunConfig) -> str:
    return (
        f"aime-rl probe knows the true state of Catch, of CartPole and of the Atari games with RAM annotations "
        f"(AtariARI), not of {config.env!r}"
    )


def unknown_state(config: RunConfig) -> str | None:
    """Why ``aime-rl probe`` cannot probe the run's env — it knows no true state of it — or None when it can."""
    env = make_single_env(config)
    try:
        default_label_fn(env)
    except ValueError:
        return no_state_message(config)
    finally:
        env.close()
    return None


def labelled_probe_frames(config: RunConfig) -> LabelledFrames:
    """The probe's random-policy frames of the run's env with their true state; ``ValueError`` (naming the flags)
    for an env without known labels, or for frames of fewer episodes than the probe's split needs, before any
    representation is computed."""
    env = make_single_env(config)
    try:
        try:
            label_fn = default_label_fn(env)
        except ValueError:
            raise ValueError(no_state_message(config)) from None
        data = collect_labelled(
            env,
            label_fn,
            config.probe_steps,
            seed=config.seed,
            max_episode_steps=config.probe_episode_steps or None,
        )
    finally:
        env.close()
    episodes = len(np.unique(data.episode_ids))
    if episodes < 3:
        raise ValueError(
            f"the probe's {config.probe_steps} frames ({flag('probe_steps')}) hold {episodes} episode(s), and its "
            f"train / validation / test split needs at least 3: raise {flag('probe_steps')}, or cut the episodes "
            f"shorter with {flag('probe_episode_steps')} N"
        )
    return data


def probe_summary(path: Path) -> dict[str, dict[str, float]]:
    """``probe.json`` → representation → {variable: score, ..., "score": the mean over categories} (R² for
    continuous variables, weighted F1 for discrete ones); empty when there is no such file."""
    if not Path(path).is_file():
        return {}
    report = json.loads(Path(path).read_text())
    return {
        name: {
            **{var: round(float(v["score"]), 3) for var, v in rep["variables"].items()},
            "score": round(float(rep["score"]), 3),
        }
        for name, rep in report["representations"].items()
    }
