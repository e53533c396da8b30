"""The ``train-agent`` stage: an SB3 agent on the causal context of the env (or only inside the world model)."""

from __future__ import annotations

import inspect
import os
from typing import Any

from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.vec_env import DummyVecEnv

from ..agents import NORMALIZATION_NAME, make_agent, normalize_observations, save_normalization
from ..perception import CausalPerceiverIO
from ..utils.io import atomic_write, atomic_write_json, read_json
from ..world_model import VRNN, WorldModelEnv
from ..wrappers import VecContextObservation
from .config import RunConfig, flag_setting
from .environment import make_venv
from .progress import AgentProgress
from .rundir import RunDir, weights_fingerprint
from .stage_common import model_dir, open_replay, require_done, say, world_model_dir

ALGORITHMS = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}


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


def check_agent_kwargs(algo: str, kwargs: dict[str, Any], run: RunDir | None = None) -> None:
    """Unknown SB3 arguments, and values of the wrong kind (:func:`agent_kwarg_problem`), are refused before
    anything is written (for an existing ``run``, the message says where unknown ones are stored: a flag can add a
    key, not remove one)."""
    signature = inspect.signature(ALGORITHMS[algo].__init__)
    accepted = set(signature.parameters) - {"self", "policy", "env"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        saved = (
            read_json(run.config_path).get("agent_kwargs", {}) if run and run.config_path.is_file() else {}
        )
        stored = [k for k in unknown if k in saved]
        where = f"; remove {', '.join(stored)} from agent_kwargs in {run.config_path}" if stored else ""
        raise ValueError(
            f"{algo.upper()} has no setting {', '.join(unknown)} (--agent-kwarg / agent_kwargs){where}"
        )
    defaults = {name: parameter.default for name, parameter in signature.parameters.items()}
    for key, value in kwargs.items():
        problem = agent_kwarg_problem(key, value, defaults[key])
        if problem:
            raise ValueError(f"--agent-kwarg {key}={value!r}: {algo.upper()}'s {key} {problem}")


#: SB3 settings with a range SB3 itself does not check (a discount above 1 trains without complaint).
UNIT_INTERVAL_SETTINGS = ("gamma", "gae_lambda", "tau")
POSITIVE_COUNT_SETTINGS = ("n_steps", "batch_size", "n_epochs", "buffer_size")


def agent_kwarg_problem(key: str, value: Any, default: Any) -> str | None:
    """What is wrong with ``value`` for the SB3 setting ``key`` whose default is ``default``, in words (None: nothing
    that can be told without building the agent). Numbers where SB3's default is a number (DQN's ``train_freq``
    may also be a pair), booleans where it is a boolean, a table for ``*_kwargs``."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if key.endswith("_kwargs"):
        return None if value is None or isinstance(value, dict) else "is a table of settings"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "is true or false"
    if isinstance(default, int | float):
        if key == "train_freq" and isinstance(value, list | tuple):
            return None
        if not is_number:
            return "is a number"
        if key in UNIT_INTERVAL_SETTINGS and not 0 <= value <= 1:
            return "is between 0 and 1"
        if key in POSITIVE_COUNT_SETTINGS and not (isinstance(value, int) and value >= 1):
            return "is a whole number >= 1"
        if key == "learning_rate" and not value > 0:
            return "is > 0"
    return None


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


def agent_difference(manifest: dict[str, Any], inputs: dict[str, Any], settings: dict[str, Any]) -> str:
    """What the run's agent (its ``manifest``) was trained with that this command would change, in words."""
    old_inputs, old_settings = manifest.get("inputs", {}), manifest.get("settings", {})
    if old_inputs.get("model") != inputs.get("model"):
        return "perception model"
    if old_inputs.get("world_model") != inputs.get("world_model"):
        return "world model (in imagination or not: --in-imagination)"
    keys = [key for key in settings if old_settings.get(key) != settings[key]]
    if not keys:
        return "version of its settings (agent.json)"
    return "value of " + ", ".join(f"{key} ({old_settings.get(key)!r} → {settings[key]!r})" for key in keys)


#: what ``agent.json`` records → the run setting a flag gives it
AGENT_SETTING_FLAGS = {
    "algo": "algo",
    "steps": "agent_steps",
    "window": "window",
    "agent_kwargs": "agent_kwargs",
}


def restart_flags(config: RunConfig, manifest: dict[str, Any], in_imagination: bool) -> str:
    """The flags that carry this command's agent settings where they differ from the run's agent (`` --algo a2c``),
    so the suggested restart trains the agent that was asked for."""
    old = manifest.get("settings", {})
    flags = [
        flag_setting(name, getattr(config, name))
        for key, name in AGENT_SETTING_FLAGS.items()
        if old.get(key) != agent_settings(config, in_imagination)[key] and getattr(config, name) != {}
    ]
    flags += ["--in-imagination"] if in_imagination else []
    return "".join(f" {f}" for f in flags)


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
            run.check_outputs("agent")
            stats = run.path / "agent" / NORMALIZATION_NAME
            if settings["normalize_observations"] and not stats.is_file():
                raise ValueError(
                    f"run {run.path.name!r} lacks {stats.relative_to(run.path)}, the statistics its agent was "
                    f"trained with: `{run.command_line('train-agent')} --restart` trains it again"
                )
            say(
                f"train-agent: already trained {config.algo} for {config.agent_steps} steps; --restart to train again"
            )
            return manifest
        difference = agent_difference(manifest, inputs, settings)
        raise ValueError(
            f"run {run.path.name!r} already has an agent trained with another {difference}; "
            f"`{run.command_line('train-agent')} --restart{restart_flags(config, manifest, in_imagination)}` "
            "replaces it (an agent does not train further)"
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
    total = steps_learn_takes(agent, config.agent_steps)
    if total != config.agent_steps:
        say(f"train-agent: {total} steps, SB3's whole rollouts past --agent-steps {config.agent_steps}")
    agent.learn(total_timesteps=config.agent_steps, callback=AgentProgress(total, enabled=progress))
    stats = run.path / "agent" / NORMALIZATION_NAME
    if config.normalize_observations:
        save_normalization(venv, stats)
    else:
        stats.unlink(missing_ok=True)
    atomic_write(run.path / "agent" / "agent.zip", agent.save)
    return agent


def steps_learn_takes(agent: BaseAlgorithm, steps: int) -> int:
    """The env steps SB3's ``agent.learn(steps)`` takes: it stops only after a whole rollout (on-policy: ``n_steps``
    of every env) or a whole ``train_freq`` (off-policy, counted in steps) of vector steps, so ``steps`` rounded up."""
    chunk = agent.n_envs
    if isinstance(agent, OnPolicyAlgorithm):
        chunk *= agent.n_steps
    elif getattr(agent, "train_freq", None) is not None and agent.train_freq.unit == TrainFrequencyUnit.STEP:
        chunk *= agent.train_freq.frequency
    return -(-steps // chunk) * chunk


def load_agent(run: RunDir, device: str = "cpu"):
    """The run's trained agent and its settings (``agent/agent.json``)."""
    manifest = require_done(run, "agent", "train-agent")
    settings = manifest["settings"]
    return ALGORITHMS[settings["algo"]].load(run.path / "agent" / "agent.zip", device=device), settings
