"""The model-training stages: ``train-tokenizer``, ``train-context`` (tokenizer frozen) and ``train-world-model``
(perception model frozen), each resuming from its last checkpoint."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
from gymnasium import spaces

from ..perception import CausalPerceiverIO, VQPTTokenizer
from ..training.checkpoint import CheckpointManager
from ..training.perception import (
    held_out_tokenizer_metrics,
    summarize,
    train_context_model,
    train_tokenizer,
    train_tokenizer_decoder,
)
from ..world_model import train_world_model
from .config import RunConfig
from .environment import make_single_env
from .rundir import RunDir, codes_fingerprint, replay_fingerprint, weights_fingerprint
from .stage_common import (
    begin_training_stage,
    context_model_to_train,
    log_replay_change,
    model_dir,
    open_replay,
    refuse_longer_checkpoints,
    require_done,
    say,
    tokenizer_to_train,
    trainer_config,
    world_model_dir,
)

#: where ``train-tokenizer`` keeps the decoder's own steps (TensorBoard, checkpoints), under ``tokenizer/``
DECODER_DIR = "decoder"


def train_tokenizer_stage(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Train the tokenizer on the replay, then (``decoder_steps``) its decoder alone on the frozen codes; saves
    ``tokenizer/model``.

    The decoder's own steps resume from ``tokenizer/decoder``; they are redone from the tokenizer's weights when the
    tokenizer trains further (its codes change), and train further on their own when only ``decoder_steps`` grew.
    """
    store = open_replay(run)
    inputs = {"replay": replay_fingerprint(store)}
    logdir = run.path / "tokenizer"
    if decoder_steps_to_train(run, config):  # the tokenizer is done: start from it, train its decoder further
        # the manifest stays "done" meanwhile: tokenizer/model is replaced only at the end, tokens unchanged
        log_replay_change(run.manifest("tokenizer"), inputs["replay"], "train-tokenizer")
        tokenizer = VQPTTokenizer.from_pretrained(logdir / "model")
        metrics: dict[str, Any] = {}
    else:
        done = begin_training_stage(
            run,
            "tokenizer",
            "train-tokenizer",
            config.tokenizer_steps,
            "--tokenizer-steps",
            inputs,
            checkpoints=logdir / "checkpoints",
        )
        if done:
            return done
        tokenizer = tokenizer_to_train(config, logdir)
        if CheckpointManager(logdir / "checkpoints").latest_step() < config.tokenizer_steps:
            shutil.rmtree(logdir / DECODER_DIR, ignore_errors=True)  # made on codes that are about to change
        metrics = train_tokenizer(
            tokenizer,
            store.directory,
            trainer_config(config, config.tokenizer_steps, lr=config.tokenizer_lr),
            logdir,
        )
    if config.decoder_steps:
        metrics |= train_tokenizer_decoder(
            tokenizer,
            store.directory,
            trainer_config(config, config.decoder_steps, lr=config.tokenizer_lr),
            logdir / DECODER_DIR,
        )
    if not metrics:  # resumed from final checkpoints: nothing trained, nothing evaluated
        metrics = held_out_tokenizer_metrics(tokenizer, store.directory, trainer_config(config, 1))
    tokenizer.save_pretrained(logdir / "model")
    manifest = {
        "status": "done",
        "steps": config.tokenizer_steps,
        "decoder_steps": config.decoder_steps,
        "inputs": inputs,
        "outputs": {"tokenizer": weights_fingerprint(logdir / "model")},
        "metrics": summarize(metrics),
    }
    run.write_manifest("tokenizer", manifest)
    say(
        f"train-tokenizer: reconstruction PSNR {manifest['metrics'].get('psnr', float('nan')):.2f} dB → {logdir / 'model'}"
    )
    return manifest


def decoder_steps_to_train(run: RunDir, config: RunConfig) -> bool:
    """Whether only the decoder's own steps are left to train: the tokenizer trained ``tokenizer_steps`` and its
    decoder fewer than ``decoder_steps`` (it says so). ``ValueError`` when the decoder trained more than asked."""
    manifest = run.manifest("tokenizer")
    if not manifest or manifest.get("status") != "done" or manifest.get("steps") != config.tokenizer_steps:
        return False
    trained = int(manifest.get("decoder_steps", 0))  # a run from before the setting trained none
    if trained > config.decoder_steps:
        raise ValueError(
            f"the tokenizer's decoder already trained {trained} steps on its own, more than --decoder-steps "
            f"{config.decoder_steps}; `train-tokenizer --restart` trains the tokenizer again from scratch"
        )
    if trained == config.decoder_steps:
        return False
    run.check_outputs("tokenizer")
    refuse_longer_checkpoints(
        run.path / "tokenizer" / DECODER_DIR / "checkpoints",
        config.decoder_steps,
        "train-tokenizer",
        "--decoder-steps",
    )
    say(f"train-tokenizer: training the decoder further, from {trained} to {config.decoder_steps} steps")
    return True


def train_context_stage(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Train the context model (the tokenizer of ``train-tokenizer``, frozen); saves ``model/``."""
    require_done(run, "tokenizer", "train-tokenizer")
    store = open_replay(run)
    tokenizer_dir = run.path / "tokenizer" / "model"
    # the tokenizer's codes, not its decoder: more decoder steps leave the tokens, and this model, valid
    inputs = {"tokenizer_codes": codes_fingerprint(tokenizer_dir), "replay": replay_fingerprint(store)}
    upstream = ("tokenizer_codes", "tokenizer")
    if "tokenizer_codes" not in ((run.manifest("context") or {}).get("inputs") or {"tokenizer_codes": 0}):
        inputs["tokenizer"] = weights_fingerprint(
            tokenizer_dir
        )  # a model made before codes were fingerprinted
        upstream = ("tokenizer", "tokenizer")
    done = begin_training_stage(
        run,
        "context",
        "train-context",
        config.context_steps,
        "--context-steps",
        inputs,
        upstream,
        run.path / "context_model" / "checkpoints",
    )
    if done:
        return done
    logdir = run.path / "context_model"
    model = context_model_to_train(config, VQPTTokenizer.from_pretrained(tokenizer_dir), logdir)
    config_steps = trainer_config(config, config.context_steps)
    metrics = train_context_model(
        model,
        store.directory,
        config_steps,
        logdir,
        token_cache=logdir / "token_cache",
        context_window=config.window,  # the whitening is calibrated on the contexts the agent's stream will see
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
        run.path / "world_model" / "checkpoints",
    )
    if done:
        return done
    perceiver = CausalPerceiverIO.from_pretrained(perception_dir, map_location=config.device).eval()
    logdir = run.path / "world_model"
    resuming = (
        CheckpointManager(logdir / "checkpoints").latest_path() is not None
    )  # keeps its own action spec
    train_world_model(
        store.directory,
        perceiver,
        trainer_config(config, config.world_model_steps),
        logdir,
        vrnn_kwargs=None if resuming else action_spec(config),
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


def action_spec(config: RunConfig) -> dict[str, Any]:
    """The run env's actions as the VRNN takes them: ``{"action_dim": n, "discrete": True}`` for ``Discrete(n)``,
    the flattened size of a ``Box`` otherwise (the replay alone holds only the actions a random policy chose)."""
    env = make_single_env(config)
    try:
        space = env.action_space
    finally:
        env.close()
    if isinstance(space, spaces.Discrete):
        return {"action_dim": int(space.n), "discrete": True}
    return {"action_dim": int(np.prod(space.shape, dtype=np.int64)), "discrete": False}
