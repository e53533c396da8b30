"""The run-directory pipeline behind the ``aime-rl`` command (the top layer: it imports everything below).

- :mod:`~aime_rl.pipeline.config`: :class:`RunConfig`, the settings of a run, validated; TOML layering.
- :mod:`~aime_rl.pipeline.rundir`: the run directory, stage manifests, fingerprints, which changes are refused.
- :mod:`~aime_rl.pipeline.stages`: collect, train the tokenizer / context model / world model / agent, evaluate,
  probe (one module per stage group, every name importable from ``stages``).
- :mod:`~aime_rl.pipeline.commands`: one CLI command = validate everything, then write.
- :mod:`~aime_rl.pipeline.lock`: one command at a time per run directory (:class:`RunLock`).
"""

from .commands import COMMAND_ALIASES, Options, prepare, run_command, run_demo
from .config import RunConfig, load_toml
from .lock import RunInUseError, RunLock
from .rundir import RunDir
from .stages import build_model, episode_returns, evaluate, load_trained_agent, make_context_venv

COMMANDS: dict[str, str] = {
    "collect": "collect random-policy frames, actions and rewards into <run>/replay (a target size: reruns top up)",
    "train-tokenizer": "train the VQ video tokenizer on <run>/replay",
    "train-context": "train the causal context model (tokenizer frozen) and save <run>/model",
    "train-world-model": "train the VRNN world model (DPGMM prior) on <run>/replay with the frozen perception model",
    "train-agent": "train an SB3 agent (ppo/a2c/dqn/sac) on the causal context of the env (or in imagination)",
    "evaluate": "evaluate the run's agent against a random policy; write report.json and report.md",
    "probe": "linear probes of what the run's context knows about the true state (AtariARI protocol) → probe.md",
    "demo": "the whole pipeline on the built-in env, ending with a short summary",
}

__all__ = [
    "COMMANDS",
    "COMMAND_ALIASES",
    "Options",
    "RunConfig",
    "RunInUseError",
    "RunLock",
    "RunDir",
    "build_model",
    "episode_returns",
    "evaluate",
    "load_toml",
    "load_trained_agent",
    "make_context_venv",
    "prepare",
    "run_command",
    "run_demo",
]
