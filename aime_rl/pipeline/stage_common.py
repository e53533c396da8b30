"""What the pipeline's stages share: messages, seeding, the run's replay and model directories, the trainer settings
of a stage, and the start of a training stage (no-op when done, refuse changed inputs, mark it running)."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..perception import CausalPerceiverIO, VQPTTokenizer, get_preset
from ..perception.config import CausalPerceiverConfig, config_from_json
from ..replay import ReplayStore
from ..training.checkpoint import CONFIG_NAME, CheckpointManager
from ..training.trainer import TrainerConfig
from ..utils.io import read_json
from .config import RunConfig
from .rundir import RunDir


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


def open_replay(run: RunDir) -> ReplayStore:
    if not (run.path / "replay").exists() or run.manifest("collect") is None:
        raise ValueError(f"run {run.path.name!r} has no replay: run `{run.command_line('collect')}` first")
    return open_replay_dir(run)


def open_replay_dir(run: RunDir) -> ReplayStore:
    """The run's replay store; a damaged one (a file missing or corrupted) is a ``ValueError`` that names the file
    and the command that collects the replay again."""
    try:
        return ReplayStore.open(run.path / "replay")
    except ValueError as err:
        raise ValueError(
            f"{err}; `{run.command_line('collect')} --restart` collects the replay again (and discards what was "
            "trained on it)"
        ) from err


#: The most steps between two periodic checkpoints of a stage (half the stage where that is fewer).
MAX_CHECKPOINT_INTERVAL = 250


def trainer_config(config: RunConfig, steps: int, lr: float | None = None) -> TrainerConfig:
    """The trainer settings of a perception or world-model stage: ``steps``, the run's batch, window and seed, and
    ``lr`` (default: the run's ``lr``; the tokenizer stage passes ``tokenizer_lr``)."""
    return TrainerConfig(
        steps=steps,
        batch_size=config.batch_size,
        sequence_length=config.sequence_length,
        lr=config.lr if lr is None else lr,
        warmup_steps=min(50, max(steps // 10, 1)),
        seed=config.seed,
        log_every=max(steps // 50, 1),
        eval_every=max(steps // 4, 1),
        # a stage stopped by a signal checkpoints where it is; one killed outright loses at most this many steps
        checkpoint_every=max(min(steps // 2, MAX_CHECKPOINT_INTERVAL), 1),
        device=config.device,
    )


def preset_config(config: RunConfig) -> CausalPerceiverConfig:
    """The configuration of ``config.preset`` for the run's frames, its predictor with ``config.predictor_kwargs``
    laid on top."""
    shape = (config.sequence_length, 3, *config.frame_shape)
    preset = get_preset(config.preset, video_shape=shape)
    return replace(preset, predictor=replace(preset.predictor, **config.predictor_kwargs))


def build_model(config: RunConfig, tokenizer: VQPTTokenizer | None = None) -> CausalPerceiverIO:
    """A fresh perception model of :func:`preset_config` (initialised from the seed).

    With a trained ``tokenizer``, the model is built around it: its own config (not the preset's, which may have
    changed since it was trained) and its weights (and, with ``embeddings_from_codes``, code embeddings that start
    from its code vectors).
    """
    torch.manual_seed(config.seed)
    preset = preset_config(config)
    if tokenizer is None:
        return CausalPerceiverIO.from_config(preset)
    return around_tokenizer(
        CausalPerceiverIO.from_config(replace(preset, tokenizer=tokenizer.config)), tokenizer
    )


def around_tokenizer(model: CausalPerceiverIO, tokenizer: VQPTTokenizer) -> CausalPerceiverIO:
    """``model`` with ``tokenizer``'s weights in its tokenizer (and code embeddings from its code vectors when the
    predictor asks for them)."""
    model.tokenizer.load_state_dict(tokenizer.state_dict())
    if model.config.predictor.embeddings_from_codes:
        model.init_embeddings_from_codebook()
    return model


# -- resuming a training stage ------------------------------------------------------------------------------------


def trained_model_config(logdir: Path, model_class: str) -> tuple[dict[str, Any], Path] | None:
    """The settings (``config.json`` without ``"class"``) of the model the newest training checkpoint under
    ``logdir/checkpoints`` holds, and the file they came from, so a resume rebuilds the model that was trained
    even when the preset has changed since. ``None`` without a checkpoint.

    A checkpoint written before checkpoints carried the model's settings (``{"class": ...}`` alone) gives the
    settings of the stage's finished model, ``logdir.parent / "model"`` for the context model or ``logdir /
    "model"`` for the tokenizer, when there is one (a run trained to the end and now trained further), else
    ``None`` (the preset's).
    """
    latest = CheckpointManager(logdir / "checkpoints").latest_path()
    if latest is None:
        return None
    candidates = (  # (file, key of the model's settings in it: the trainer writes {"model": …, "trainer": …})
        (latest / CONFIG_NAME, "model"),
        (logdir / "model" / CONFIG_NAME, None),
        (logdir.parent / "model" / CONFIG_NAME, None),
    )
    for source, key in candidates:
        if not source.is_file():
            continue
        settings = read_json(source)
        settings = settings.get(key) if key else settings
        if isinstance(settings, dict) and settings.pop("class", None) == model_class and settings:
            return settings, source
    return None


def settings_changed(trained: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``"section.key trained (now now)"`` for each setting where the nested dicts ``trained`` and ``current``
    differ (keys only one of them has included)."""
    changes = []
    for key in sorted(set(trained) | set(current)):
        old, new = trained.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += settings_changed(old, new, f"{prefix}{key}.")
        elif json_value(old) != json_value(new):
            changes.append(f"{prefix}{key} {old!r} (now {new!r})")
    return changes


def json_value(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), for comparing a dataclass with a ``config.json``."""
    return [json_value(v) for v in value] if isinstance(value, list | tuple) else value


def say_resumed(command: str, source: Path, changes: list[str]) -> None:
    if changes:
        say(
            f"{command}: resuming the model the checkpoint holds ({source}), whose settings differ from the "
            f"preset's now: {'; '.join(changes)}. --restart to train the preset's model from scratch"
        )


def tokenizer_to_train(config: RunConfig, logdir: Path) -> VQPTTokenizer:
    """The tokenizer the ``train-tokenizer`` stage trains: the one its newest checkpoint under ``logdir`` holds
    (built from the checkpoint's settings; the trainer then loads the weights), else a fresh one of the preset."""
    trained = trained_model_config(logdir, "VQPTTokenizer")
    if trained is None:
        return build_model(config).tokenizer
    settings, source = trained
    say_resumed(
        "train-tokenizer", source, settings_changed(settings, asdict(preset_config(config).tokenizer))
    )
    torch.manual_seed(config.seed)
    return VQPTTokenizer.from_config_json(settings, source)


def context_model_to_train(config: RunConfig, tokenizer: VQPTTokenizer, logdir: Path) -> CausalPerceiverIO:
    """The perception model the ``train-context`` stage trains around the trained ``tokenizer``: the one its
    newest checkpoint under ``logdir`` holds (built from the checkpoint's settings), else :func:`build_model`'s."""
    trained = trained_model_config(logdir, "CausalPerceiverIO")
    if trained is None:
        return build_model(config, tokenizer)
    settings, source = trained
    current = asdict(replace(preset_config(config), tokenizer=tokenizer.config))
    say_resumed("train-context", source, settings_changed(settings, current))
    torch.manual_seed(config.seed)
    return around_tokenizer(CausalPerceiverIO.from_config(config_from_json(settings, source)), tokenizer)


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
    checkpoints: Path | None = None,
) -> dict[str, Any] | None:
    """The common start of a training stage: refuse a changed ``upstream`` artifact ``(input key, what)``, return
    the manifest when the stage already trained ``steps`` (a no-op), refuse ``checkpoints`` that hold more steps
    than asked (an interrupted longer training), else say what changed in the replay, mark the stage running and
    return ``None``."""
    manifest = run.manifest(stage)
    if upstream:
        refuse_changed_inputs(manifest, inputs, command, *upstream)
    if manifest and manifest.get("status") == "done":
        run.check_outputs(stage)  # before any "already trained": a no-op on a damaged run would mislead
    if finished(manifest, command, steps, steps_flag):
        return manifest
    refuse_longer_checkpoints(checkpoints, steps, command, steps_flag)
    log_replay_change(manifest, inputs["replay"], command)
    run.write_manifest(stage, {"status": "running", "steps": steps, "inputs": inputs})
    return None


def refuse_longer_checkpoints(checkpoints: Path | None, steps: int, command: str, steps_flag: str) -> None:
    """``ValueError`` when the newest checkpoint under ``checkpoints`` holds more than ``steps`` steps: a longer
    training was stopped there, and resuming it cannot give fewer."""
    trained = CheckpointManager(checkpoints).latest_step() if checkpoints is not None else 0
    if trained > steps:
        raise ValueError(
            f"{command}'s checkpoint holds {trained} steps (a longer training was stopped there), more than "
            f"{steps_flag} {steps}: {steps_flag} {trained} or more resumes it, --restart trains again from scratch"
        )


def require_done(run: RunDir, stage: str, command: str) -> dict[str, Any]:
    manifest = run.manifest(stage)
    if not manifest or manifest.get("status") != "done":
        what = {"context": "context model", "world_model": "world model"}.get(stage, stage)
        raise ValueError(
            f"run {run.path.name!r} has no finished {what}: run `{run.command_line(command)}` first"
        )
    run.check_outputs(stage)
    return manifest


def model_dir(run: RunDir) -> Path:
    require_done(run, "context", "train-context")
    return run.path / "model"


def world_model_dir(run: RunDir) -> Path:
    return run.path / "world_model" / "world_model"
