"""The pipeline's stages: collect → tokenizer → context model → (world model) → agent → evaluate, and probe.

Each stage function takes the run's :class:`RunConfig` and its :class:`RunDir`, writes only its own outputs (see
:mod:`aime_rl.pipeline.rundir`) and returns its manifest (``evaluate`` its report, ``probe`` the path of its
``probe.json``). Re-running a finished training stage with the same settings is a no-op that says so (the two
measurements, ``evaluate`` and ``probe``, measure again on every call); asking for more steps trains further from the last checkpoint; a stage whose inputs changed
underneath it (a retrained tokenizer under a context model) refuses to resume and asks for ``--restart``.

The stages live one group to a module, and every name is importable from here:

- :mod:`~aime_rl.pipeline.stage_common`: messages, seeding, the replay and model directories of a run, the trainer
  settings of a stage and the common start of a training stage;
- :mod:`~aime_rl.pipeline.collect_stage`: ``collect``;
- :mod:`~aime_rl.pipeline.model_stages`: ``train-tokenizer``, ``train-context``, ``train-world-model``;
- :mod:`~aime_rl.pipeline.agent_stage`: ``train-agent``, and loading the trained agent;
- :mod:`~aime_rl.pipeline.evaluate_stages`: ``evaluate`` and ``probe``.
"""

from __future__ import annotations

from .agent_stage import (
    ALGORITHMS,
    agent_settings,
    check_agent_kwargs,
    learn_and_save,
    load_agent,
    make_context_venv,
    train_agent_stage,
)
from .collect_stage import COLLECT_SESSION_SEED_STRIDE, collect
from .evaluate_stages import (
    agent_and_env,
    episode_returns,
    evaluate,
    load_trained_agent,
    log_evaluation,
    probe,
    probe_inputs,
    probe_is_current,
    probe_protocol,
    probe_representations,
    probe_summary,
    unknown_state,
)
from .model_stages import (
    format_context_metrics,
    train_context_stage,
    train_tokenizer_stage,
    train_world_model_stage,
)
from .stage_common import (
    begin_training_stage,
    build_model,
    finished,
    log_replay_change,
    model_dir,
    open_replay,
    refuse_changed_inputs,
    require_done,
    say,
    seed_everything,
    trainer_config,
    world_model_dir,
)

__all__ = [
    "ALGORITHMS",
    "COLLECT_SESSION_SEED_STRIDE",
    "agent_and_env",
    "agent_settings",
    "begin_training_stage",
    "build_model",
    "check_agent_kwargs",
    "collect",
    "episode_returns",
    "evaluate",
    "finished",
    "format_context_metrics",
    "learn_and_save",
    "load_agent",
    "load_trained_agent",
    "log_evaluation",
    "log_replay_change",
    "make_context_venv",
    "model_dir",
    "open_replay",
    "probe",
    "probe_inputs",
    "probe_is_current",
    "probe_protocol",
    "probe_representations",
    "probe_summary",
    "refuse_changed_inputs",
    "require_done",
    "say",
    "seed_everything",
    "train_agent_stage",
    "train_context_stage",
    "train_tokenizer_stage",
    "train_world_model_stage",
    "trainer_config",
    "unknown_state",
    "world_model_dir",
]
