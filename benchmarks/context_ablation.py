"""Ablation of the context model: what each change buys in the state the context carries.

Takes a run whose tokenizer is trained (``aime-rl collect`` + ``train-tokenizer``), trains the context model once per
variant on the run's replay with that tokenizer frozen, and probes each variant's streamed context on the same
labelled random-policy frames (``aime_rl.evaluation``; Catch: R² of a ridge probe per state variable; Atari: F1 per
RAM variable). Optionally trains PPO on each variant's context (``--agent-steps``) and reports the mean return.
``--model-seeds`` trains each variant's context model once per seed: PPO's spread over agent seeds on one model
misses the spread between models, which is as large (``benchmarks/README.md``, tenth session). ``--baselines
random_cnn pixels`` adds rows for representations that need no model, probed on the same frames; ``--also-probe
latents`` probes each trained model's latents side by side as well (what the latents lose vs what the pooling loses);
``--landing`` (Catch) adds the ball's landing column, what a catching policy acts on; ``--probe-policy`` (with it)
plays fixed policies that read the context only through those ridge probes (an agent-free return per model).

    python benchmarks/context_ablation.py --run runs/demo [--steps 200] [--variants seed ctx ctx+pos]
        [--probe-steps 3000] [--probe-seed 1234] [--landing [--probe-policy]] [--agent-steps 20000] [--seeds 0 1 2] [--model-seeds 0 1 2]
        [--baselines random_cnn pixels] [--also-probe latents]

Variants (model arguments over the run's preset): see ``VARIANTS``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.envs import make_env
from aime_rl.evaluation import catch_landing_labels, collect_labelled, default_label_fn, probe_model
from aime_rl.evaluation.representations import compute_representations
from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer
from aime_rl.perception.losses import per_id_cross_entropy
from aime_rl.perception.modules.whitening import ContextWhitening
from aime_rl.pipeline import RunConfig, RunDir
from aime_rl.pipeline.stages import trainer_config
from aime_rl.training.perception import train_context_model, train_tokenizer

VARIANTS: dict[str, dict] = {
    "preset": {},
    "seed-objective": {"context_prediction_weight": 0.0},
    "ctx": {"context_prediction_weight": 1.0},
    "ctx+change1": {"context_prediction_weight": 1.0, "change_weight": 1.0},
    # the pooled context's own next-frame term weighted up: it alone trains the pooling (the latents hold more)
    "ctx2": {"context_prediction_weight": 2.0},
    "memory0": {
        "latent_memory": 0
    },  # the seventeenth session's model, on a run of the preset with the memory
    "memory1": {"latent_memory": 1},
    "memory2": {"latent_memory": 2},
    "memory4": {"latent_memory": 4},
    "readout4": {"context_readout_tokens": 4},
    "readout8": {"context_readout_tokens": 8},
    "readout16": {"context_readout_tokens": 16},
    "memory2+readout4": {"latent_memory": 2, "context_readout_tokens": 4},
    "ctx4": {"context_prediction_weight": 4.0},
    # the pooled context also reconstructs the frame's latents through a linear map (what the latents hold, kept)
    "recon0.1": {"latent_reconstruction_weight": 0.1},
    "recon1": {"latent_reconstruction_weight": 1.0},
    "recon0.01": {"latent_reconstruction_weight": 0.01},
    "recon4": {"latent_reconstruction_weight": 4.0},
    # ... of how the latents changed since the frame before (what moves), from the context alone
    "recon-changes1": {"latent_reconstruction_weight": 1.0, "_reconstruct_changes": True},
    "recon-changes0.1": {"latent_reconstruction_weight": 0.1, "_reconstruct_changes": True},
    # ... of how the latents will change over the next 2 steps (what a velocity predicts), on the demo's recipe (its
    # clips give the loss 3 context steps, so 2 is the longest horizon with a target)
    "pixel-motion-lr3-recon-future2": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "latent_reconstruction_weight": 1.0,
        "_reconstruct_future": 2,
    },
    # ... with every latent channel standardised (each of the N · D directions weighs the same, not by its variance)
    "recon-std0.1": {"latent_reconstruction_weight": 0.1, "_reconstruct_standardised": True},
    "recon-std1": {"latent_reconstruction_weight": 1.0, "_reconstruct_standardised": True},
    # a linear map of the context names every cell's tokens of the same step and the next (horizons 0 and 1), its
    # gradient through the whole model: the ridge probes' reader, trained (weight on the term)
    "linear-tokens1": {"latent_reconstruction_weight": 1.0, "_linear_tokens": (0, 1)},
    "linear-tokens0.3": {"latent_reconstruction_weight": 0.3, "_linear_tokens": (0, 1)},
    "linear-next1": {"latent_reconstruction_weight": 1.0, "_linear_tokens": (1,)},
    "linear-now1": {"latent_reconstruction_weight": 1.0, "_linear_tokens": (0,)},
    # ... on the demo's recipe: the context names the frame's own tokens linearly (the codes place the ball to a third
    # of a pixel, and vy needs the context to place it to a quarter)
    "pixel-motion-lr3-linear-now1": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "latent_reconstruction_weight": 1.0,
        "_linear_tokens": (0,),
    },
    # the next-frame terms decode from one of each clip's earlier frames per step, drawn per clip (a cheaper step)
    "samples1": {"next_frame_samples": 1},
    # the context alone predicts the next 2 / 3 token steps (velocity as well as position)
    "ctx-horizon2": {"context_prediction_weight": 1.0, "context_prediction_horizon": 2},
    "ctx-horizon3": {"context_prediction_weight": 1.0, "context_prediction_horizon": 3},
    "pos0.15": {"_position_scale": 0.15},
    "pos0.3": {"_position_scale": 0.3},
    "pos0.1": {"_position_scale": 0.1},
    # the code embeddings scaled up at init, to the grid encoding's norm (≈ 0.64 against 6.9 in "small")
    "embed10": {"_embedding_scale": 10.0},
    "downsample4": {"downsample": 4},  # needs a run whose tokenizer was trained with downsample 4
    "downsample4+pos0.15": {"downsample": 4, "_position_scale": 0.15},
    "downsample4+ctx": {"downsample": 4, "context_prediction_weight": 1.0},
    "attention-pool": {"_pooling": "attention"},
    # each code's embedding starts at a random projection of the tokenizer's code vector (similar patches, similar
    # embeddings) instead of an independent random row
    "embed-codes": {"embeddings_from_codes": True},
    "no-embed-codes": {"embeddings_from_codes": False},
    "embed-codes-half": {"embeddings_from_codes": True, "_code_share": 0.5},
    "embed-codes-centered": {"embeddings_from_codes": True, "_code_geometry": "centered"},
    "embed-codes-local": {"embeddings_from_codes": True, "_code_geometry": "local"},
    "pixel-changes": {"pixel_changes": True},
    # each key also carries its cell's motion: a 3×3 conv over the last k token steps' code embeddings, trained by its
    # own head to name the next tokens of the cell's 3×3 neighbourhood (local_motion_weight, default 1); "keys0":
    # the map of those features into the keys starts at zero (the model starts as the preset's)
    "local-motion2": {"local_motion_frames": 2},
    "local-motion3": {"local_motion_frames": 3},
    "local-motion4": {"local_motion_frames": 4},
    "local-motion3-w0.3": {"local_motion_frames": 3, "local_motion_weight": 0.3},
    "local-motion3-w3": {"local_motion_frames": 3, "local_motion_weight": 3.0},
    "local-motion3-keys0": {"local_motion_frames": 3, "_local_keys_zero": True},
    "local-motion3-keys0.02": {"local_motion_frames": 3, "_local_keys_std": 0.02},
    # the cells' motion features also enter the pooled context through their own map (twenty-seventh session)
    "local-motion3-context": {"local_motion_frames": 3, "local_motion_context": True},
    # ... and the head also names the neighbourhood's tokens two steps ahead (twenty-eighth session)
    "local-motion3-context-h2": {
        "local_motion_frames": 3,
        "local_motion_context": True,
        "local_motion_horizon": 2,
    },
    # on a run of the demo's recipe (three frames, three steps ahead): a longer history for the convolution, which a
    # fall speed (one number per ball, ≈ 2 px a step at 32×32) needs (thirty-second session)
    "local-motion5": {"local_motion_frames": 5},
    "local-motion6": {"local_motion_frames": 6},
    "spatial4": {"spatial_attention_bias": 4.0},
    "spatial8": {"spatial_attention_bias": 8.0},
    "spatial16": {"spatial_attention_bias": 16.0},
    # the latents cross-attend twice (the same layers): the second pass queries with what the first found
    "iter2": {"encoder_iterations": 2},
    "no-motion+iter2": {"motion_attention_bias": 0.0, "encoder_iterations": 2},
    "no-motion+xheads8": {"motion_attention_bias": 0.0, "num_cross_attention_heads": 8},
    "latents4": {"num_latents": 4},
    "latents8": {"num_latents": 8},
    "latents16": {"num_latents": 16},  # the "small" preset's, against a run of the demo's recipe (8)
    # the local motion head names each neighbourhood's tokens further ahead / its conv sees more steps (the demo's
    # recipe: 3 and 3): a fall speed differs by a fraction of a pixel a step, which only a few steps resolve
    "motion-ahead5": {"local_motion_horizon": 5},
    "motion-frames5": {"local_motion_frames": 5},
    "motion-frames5-ahead5": {"local_motion_frames": 5, "local_motion_horizon": 5},
    # the motion head's predictions also scored with a sense of distance: the code vectors they expect against the
    # true ones (a ball predicted a pixel off costs less than one five off; cross-entropy scores both as wrong)
    "motion-distance1": {"_motion_distance": 1.0},
    "motion-distance10": {"_motion_distance": 10.0},
    # ... in pixels: the cell patches the tokenizer's patch decoder draws from the expected and the true code vectors,
    # both blurred 3×3, so a ball drawn a pixel or two off overlaps its true place
    "motion-pixels1": {"_motion_distance": 1.0, "_motion_distance_space": "pixels"},
    "motion-pixels10": {"_motion_distance": 10.0, "_motion_distance_space": "pixels"},
    # longer training clips: the first half is the context the losses predict from (the demo's 6 frames: 3 of them),
    # so the model learns to use only as much history as a clip's first half holds
    "clips8": {"_sequence_length": 8},
    # each cell's code heads combined non-additively: an MLP of the heads' embeddings side by side, added to their sum
    # (a sum of one embedding per head places Catch's ball to ± 0.58 px at best, the codes jointly to ± 0.33)
    "joint-codes": {"_joint_codes": True},
    "clips12": {"_sequence_length": 12},
    # the local motion encoder's features at a training clip's first steps see its whole history (k − 1 steps
    # before the clip); and it reads each cell's pixels instead of its code embeddings (more steps, further ahead)
    "motion-history": {"local_motion_history": True},
    "pixel-motion": {"local_motion_inputs": "pixels", "local_motion_history": True},
    "pixel-motion-no-history": {"local_motion_inputs": "pixels"},
    "pixel-motion-lr3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
    },
    # the demo's recipe without the context-prediction term (the Atari recipe's change, forty-first session)
    "pixel-motion-lr3-cp0": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "context_prediction_weight": 0.0,
    },
    # the demo's recipe with its context-prediction term scored on the cells that change only
    "pixel-motion-lr3-ctx-changes": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_context_changes_only": True,
    },
    "pixel-motion-lr3-cp0.1": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "context_prediction_weight": 0.1,
    },
    "pixel-motion6-ahead5-lr3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_lr_scale": 3.0,
    },
    "motion-lr3": {"local_motion_lr_scale": 3.0},
    # the demo's local motion (pixels, history, 3×) on a run of the Atari recipe (which has none): in the keys
    # only, and also in the pooled context (thirty-seventh session)
    "pixel-motion3-keys": {
        "local_motion_frames": 3,
        "local_motion_horizon": 3,
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
    },
    "pixel-motion3-keys-lr1": {
        "local_motion_frames": 3,
        "local_motion_horizon": 3,
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
    },
    "pixel-motion3-context": {
        "local_motion_frames": 3,
        "local_motion_horizon": 3,
        "local_motion_context": True,
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
    },
    # clips of 12 frames (6 of context) whose pooled context also names the frame 5 steps ahead: a term of the
    # context that needs the speed (thirty-seventh session)
    "pixel-motion-lr3-clips12-ctx5": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "context_prediction_horizon": 5,
        "_sequence_length": 12,
    },
    # every token term (the pooled context's too) also averaged over the cells that change: the ball's and the
    # paddle's, where the speed decides the next tokens (thirty-seventh session)
    "pixel-motion-lr3-change1": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "change_weight": 1.0,
    },
    "pixel-motion-lr3-change4": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "change_weight": 4.0,
    },
    # the pooled context's own term also gets graded credit for naming the changing cells near their true pixels
    "pixel-motion-lr3-ctx-pixels1": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_context_distance": 1.0,
    },
    "pixel-motion-lr3-ctx-pixels3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_context_distance": 3.0,
    },
    "pixel-motion-lr3-ctx-pixels3-all": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_context_distance": 3.0,
        "_context_distance_cells": "all",
    },
    "pixel-motion-lr3-ctx-pixels3-h3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "context_prediction_horizon": 3,
        "_context_distance": 3.0,
    },
    "pixel-motion6-ahead5-lr3-ctx-pixels3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_lr_scale": 3.0,
        "_context_distance": 3.0,
    },
    "pixel-motion-lr3-ctx-pixels10": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_context_distance": 10.0,
    },
    # the next-frame decoder's logits give each cell's last token a learned bonus (PredictorConfig.copy_logit)
    "pixel-motion-lr3-copy-logit3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "copy_logit": 3.0,
    },
    "copy-logit3": {"copy_logit": 3.0},
    "copy-logit0": {"copy_logit": 0.0},  # the Atari recipe before the fortieth session
    "copy-logit3-change1": {"copy_logit": 3.0, "change_weight": 1.0},
    # the Atari recipe since the forty-first session: no context-prediction term (on a busy screen it takes what
    # the untrained latents hold; Space Invaders). For runs made before it; a newer run's "preset" row is this
    "copy-logit3-cp0": {"copy_logit": 3.0, "context_prediction_weight": 0.0},
    "copy-logit3-cp0.1": {"copy_logit": 3.0, "context_prediction_weight": 0.1},
    # the input adapter (code embeddings, grid-position map) left as drawn (PredictorConfig.frozen_embeddings), alone
    # and over the Atari recipe's two keys (for runs made before they were in it)
    "frozen-embeddings": {"frozen_embeddings": True},
    # the Atari recipe's table trained, as before the forty-fourth session
    "trained-embeddings": {"frozen_embeddings": False},
    "copy-logit3-cp0-frozen-embeddings": {
        "copy_logit": 3.0,
        "context_prediction_weight": 0.0,
        "frozen_embeddings": True,
    },
    # … with the temporal global-local InfoNCE (ST-DIM's kind of term: the context must tell its clip's next tokens
    # from the other clips'), a term that asks for what differs between clips where the next frame teaches nothing
    "copy-logit3-cp0-contrastive1": {
        "copy_logit": 3.0,
        "context_prediction_weight": 0.0,
        "contrastive_weight": 1.0,
    },
    # today's Atari recipe with each latent given a home on the token grid (the latents start as a coarse map of the
    # screen, not N near-copies of its average: on a game the training teaches little, the start is what it reads)
    "copy-logit3-cp0-spatial8": {
        "copy_logit": 3.0,
        "context_prediction_weight": 0.0,
        "spatial_attention_bias": 8.0,
    },
    "copy-logit3-cp0-spatial16": {
        "copy_logit": 3.0,
        "context_prediction_weight": 0.0,
        "spatial_attention_bias": 16.0,
    },
    # the context-prediction term back, scored on the cells that change only: the pooled context is asked for what
    # moves, not for the bulk of a busy screen (which the term's whole-frame mean pulled the latents to)
    "copy-logit3-ctx-changes": {
        "copy_logit": 3.0,
        "context_prediction_weight": 1.0,
        "_context_changes_only": True,
    },
    # today's Atari recipe (for runs made before it) with a linear map of the context naming every cell's tokens of
    # the same frame: a term that asks the context to keep what the frame shows, where naming the next frame does not
    "copy-logit3-cp0-linear-now1": {
        "copy_logit": 3.0,
        "context_prediction_weight": 0.0,
        "latent_reconstruction_weight": 1.0,
        "_linear_tokens": (0,),
    },
    # no self-attention among the decoder's queries: a query knows its own cell's last tokens (and the copy prior
    # keeps them), but a sprite that moves in from a neighbouring cell must come from the latents
    "copy-logit3-sa0": {"copy_logit": 3.0, "num_decoder_self_attention_layers": 0},
    "copy-logit3-change1-sa0": {
        "copy_logit": 3.0,
        "change_weight": 1.0,
        "num_decoder_self_attention_layers": 0,
    },
    # the latents' next-frame term without the copy prior: each earlier frame's latents name the whole next frame
    # (hook, below), so what the decoder could otherwise copy or move from a cell's own last tokens — a small
    # sprite — must be in the latents
    "next-frame-no-copy": {"_next_frame_copy": False},
    "next-frame-no-copy-copy-logit3": {"_next_frame_copy": False, "copy_logit": 3.0},
    "pixel-motion-lr3-copy-logit6": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "copy_logit": 6.0,
    },
    "pixel-motion-lr3-copy-logit1": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "copy_logit": 1.0,
    },
    "pixel-motion-lr3-whitened-slot": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_whitened_slot": 1e-4,
    },
    "pixel-motion-lr3-whitened-slot-1e-5": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_lr_scale": 3.0,
        "_whitened_slot": 1e-5,
    },
    "pixel-motion6-ahead5-lr3-whitened-slot": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_lr_scale": 3.0,
        "_whitened_slot": 1e-4,
    },
    "pixel-motion6-ahead5-lr10": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_lr_scale": 10.0,
    },
    "pixel-motion6-ahead5-ctx3": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "context_prediction_horizon": 3,
    },
    "pixel-motion6-ahead5-bottleneck": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_context": True,
        "_motion_bottleneck": True,
    },
    "pixel-motion6-ahead5-slot-term": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "local_motion_context": True,
        "_motion_bottleneck": "extra",
    },
    "pixel-motion6-ahead5-ctx5": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "context_prediction_horizon": 5,
    },
    "pixel-motion6-ahead5-frozen-table": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "_frozen_motion_table": True,
    },
    "pixel-motion6-ahead5-detached": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
        "_detach_motion": True,
    },
    "pixel-motion6": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
    },
    "pixel-motion6-ahead5": {
        "local_motion_inputs": "pixels",
        "local_motion_history": True,
        "local_motion_frames": 6,
        "local_motion_horizon": 5,
    },
    "latents32": {"num_latents": 32},
    "latents64": {"num_latents": 64},
    "downsample4+attention-pool": {"downsample": 4, "_pooling": "attention"},
    # "_train_tokenizer": a fresh tokenizer with the variant's overrides, trained for the run's tokenizer steps
    # the preset's tokenizer trained again, the row to compare the variants below with
    "retrained-tokenizer": {"_train_tokenizer": True},
    # 4×4-pixel token cells, the tokenizer trained for the variant on the run's replay (a finer grid)
    "downsample4-trained": {"downsample": 4, "_train_tokenizer": True},
    "foreground10": {"foreground_weight": 10.0, "_train_tokenizer": True},
    "stability0": {"stability_weight": 0.0, "_train_tokenizer": True},
    "stability1": {"stability_weight": 1.0, "_train_tokenizer": True},
    "stability10": {"stability_weight": 10.0, "_train_tokenizer": True},
    "stability30": {"stability_weight": 30.0, "_train_tokenizer": True},
    # "flatten-pool": the latents side by side, now the library's context_pooling="projection"
    "stability10+flatten-pool": {
        "stability_weight": 10.0,
        "_train_tokenizer": True,
        "context_pooling": "projection",
    },
    "stability10+flatten-pool+ctx": {
        "stability_weight": 10.0,
        "_train_tokenizer": True,
        "context_pooling": "projection",
        "context_prediction_weight": 1.0,
    },
    "change1": {"change_weight": 1.0},
    "change4": {"change_weight": 4.0},
    "contrastive1": {"contrastive_weight": 1.0},
    "stability10+contrastive1": {
        "stability_weight": 10.0,
        "_train_tokenizer": True,
        "contrastive_weight": 1.0,
    },
    "contrastive1+change1": {"contrastive_weight": 1.0, "change_weight": 1.0},
    # a linear map of frame t's context predicts how the context changes by frame t + h (h in the tuple; the change
    # detached, each channel over its variance): the context must hold, linearly, what moves it — the velocities
    # (the contrastive term's weight and slot carry it)
    "dynamics1": {"contrastive_weight": 1.0, "_linear_dynamics": (1,)},
    "dynamics0.3": {"contrastive_weight": 0.3, "_linear_dynamics": (1,)},
    "dynamics1-h12": {"contrastive_weight": 1.0, "_linear_dynamics": (1, 2)},
    "marks": {"mark_changes": True},
    "downsample4+marks": {"downsample": 4, "mark_changes": True},
    "downsample4+stability1+marks": {
        "downsample": 4,
        "stability_weight": 1.0,
        "mark_changes": True,
        "_train_tokenizer": True,
    },
    "stability1+marks": {"stability_weight": 1.0, "mark_changes": True, "_train_tokenizer": True},
    "stability10+marks": {"stability_weight": 10.0, "mark_changes": True, "_train_tokenizer": True},
    "motion1": {"motion_attention_bias": 1.0},
    "motion2": {"motion_attention_bias": 2.0},
    "motion3": {"motion_attention_bias": 3.0},
    "motion4": {"motion_attention_bias": 4.0},
    "motion2+change1": {"motion_attention_bias": 2.0, "change_weight": 1.0},
    "motion1+latents32": {"motion_attention_bias": 1.0, "num_latents": 32},
    "motion2+latents32": {"motion_attention_bias": 2.0, "num_latents": 32},
    "random-tokenizer": {"_untrained_tokenizer": True},
    "codes512": {"num_codes": 512, "_train_tokenizer": True},
    "foreground0": {
        "foreground_weight": 0.0,
        "_train_tokenizer": True,
    },  # the preset's tokenizer at its initialisation
    "no-motion": {"motion_attention_bias": 0.0},
    "decoder-sa0": {"num_decoder_self_attention_layers": 0, "decoder_channels": 256},
    "decoder256": {"decoder_channels": 256},  # the seed's decoder, at the "small" preset's latent width
    "decoder128": {"decoder_channels": 128},
    "decoder64": {"decoder_channels": 64},
    "decoder64-sa0": {"decoder_channels": 64, "num_decoder_self_attention_layers": 0},
    "decoder32": {"decoder_channels": 32},
    "no-motion+mean-pool": {"motion_attention_bias": 0.0, "context_pooling": "mean"},
    # "_motion_heads": k keeps the initial motion bias in the first k cross-attention heads only
    "motion1-head1": {"_motion_heads": 1},
    "motion2-head1": {"motion_attention_bias": 2.0, "_motion_heads": 1},
    # the tokenizer's convs pad with the border pixels instead of zeros (a fresh tokenizer, the preset's other keys)
    "replicate-padding": {"padding": "replicate", "_train_tokenizer": True},
    "replicate-padding+stability0": {
        "padding": "replicate",
        "stability_weight": 0.0,
        "_train_tokenizer": True,
    },
    "zeros-padding": {"padding": "zeros", "_train_tokenizer": True},
    "zeros-padding+stability0": {"padding": "zeros", "stability_weight": 0.0, "_train_tokenizer": True},
    # each token from its own cell's pixels (static cells keep their tokens; the stability term has nothing to do)
    "patch-encoder": {
        "encoder": "patch",
        "padding": "replicate",
        "stability_weight": 0.0,
        "_train_tokenizer": True,
    },
    "unet-encoder": {
        "encoder": "unet",
        "padding": "zeros",
        "stability_weight": 10.0,
        "_train_tokenizer": True,
    },
    # a penalty per frame of a key's age in every other cross-attention head (the latents read the present)
    "recency0.5": {"recency_bias": 0.5},
    "recency1": {"recency_bias": 1.0},
    "recency2": {"recency_bias": 2.0},
    "no-recency": {"recency_bias": 0.0},
    # "_recency_slopes": the starting slope of each head (a spectrum of look-backs instead of two kinds)
    "recency-spectrum": {"_recency_slopes": [2.0, 0.0, 0.5, 0.0]},
    "mean-pool": {"context_pooling": "mean"},  # the seed's pooling (the "small" preset projects)
    "projection-pool": {"context_pooling": "projection"},
    # a finer token grid with the preset's patch tokenizer (a fresh one): 8×8 tokens of 4×4 pixels at 32×32
    "downsample4-patch": {"downsample": 4, "_train_tokenizer": True},
    # the decoder reads the pooled context (and its summaries) instead of the 16 latents: every prediction loss then
    # passes through the 256-d context the agent sees
    "context-memory": {"_context_memory": True},
    # the context handed out unwhitened (the "small" preset whitens it: ContextWhitening)
    "no-whitening": {"context_whitening": False},
    # each key also embeds its cell's tokens of the step before (how the cell changed)
    "previous-tokens": {"previous_tokens": True},
    "ctx+previous-tokens": {"context_prediction_weight": 1.0, "previous_tokens": True},
    "downsample4+stability1": {"downsample": 4, "stability_weight": 1.0, "_train_tokenizer": True},
    "downsample4+stability1+motion2": {
        "downsample": 4,
        "stability_weight": 1.0,
        "motion_attention_bias": 2.0,
        "_train_tokenizer": True,
    },
}


class AttentionPool(torch.nn.Module):
    """Experiment: the context as a learned query's attention over the N latents, instead of their mean."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = torch.nn.Parameter(torch.zeros(channels))
        self.key = torch.nn.Linear(channels, channels)
        self.value = torch.nn.Linear(channels, channels)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        weights = (self.key(latents) @ self.query / latents.shape[-1] ** 0.5).softmax(-1)
        return (weights.unsqueeze(-1) * self.value(latents)).sum(-2)


def build(
    config: RunConfig, tokenizer_dir: Path, overrides: dict, tmp: Path
) -> tuple[CausalPerceiverIO, dict]:
    """The variant's model with a trained, frozen tokenizer, and that tokenizer's held-out metrics. The variant's
    ``overrides`` are laid over the run's own ``predictor_kwargs`` (its "preset" row is the run's model)."""
    torch.manual_seed(config.seed)
    shape = (config.sequence_length, 3, *config.frame_shape)
    overrides = {**config.predictor_kwargs, **overrides}
    tokenizer_metrics = {}
    position_scale = overrides.pop("_position_scale", None)
    pooling = overrides.pop("_pooling", None)
    motion_heads = overrides.pop("_motion_heads", None)
    embedding_scale = overrides.pop("_embedding_scale", None)
    recency_slopes = overrides.pop("_recency_slopes", None)
    untrained_tokenizer = overrides.pop("_untrained_tokenizer", False)
    context_memory = overrides.pop("_context_memory", False)
    code_share = overrides.pop("_code_share", None)
    code_geometry = overrides.pop("_code_geometry", None)
    reconstruct_changes = overrides.pop("_reconstruct_changes", False)
    reconstruct_standardised = overrides.pop("_reconstruct_standardised", False)
    reconstruct_future = overrides.pop("_reconstruct_future", None)
    linear_tokens = overrides.pop("_linear_tokens", None)
    linear_dynamics = overrides.pop("_linear_dynamics", None)
    motion_distance = overrides.pop("_motion_distance", None)
    joint_codes = overrides.pop("_joint_codes", False)
    motion_distance_space = overrides.pop("_motion_distance_space", "codes")
    overrides.pop("_sequence_length", None)  # read by train_and_measure: the run's config is replaced there
    local_keys_zero = overrides.pop("_local_keys_zero", False)
    detach_motion = overrides.pop("_detach_motion", False)
    frozen_motion_table = overrides.pop("_frozen_motion_table", False)
    motion_bottleneck = overrides.pop("_motion_bottleneck", False)
    local_keys_std = overrides.pop("_local_keys_std", None)
    whitened_slot = overrides.pop("_whitened_slot", None)
    context_distance = overrides.pop("_context_distance", None)
    context_distance_cells = overrides.pop("_context_distance_cells", "changed")
    context_changes_only = overrides.pop("_context_changes_only", False)
    next_frame_copy = overrides.pop("_next_frame_copy", True)
    if overrides.pop("_train_tokenizer", False):
        fresh = CausalPerceiverIO.from_preset(config.preset, video_shape=shape, **overrides).tokenizer
        trained = train_tokenizer(
            fresh,
            tokenizer_dir.parent.parent / "replay",
            trainer_config(config, config.tokenizer_steps, lr=config.tokenizer_lr),
            tmp / "tokenizer_log",
        )
        tokenizer_metrics = {
            k: round(float(trained[k]), 3) for k in ("psnr", "foreground_psnr", "token_stability")
        }
        fresh.save_pretrained(tmp / "tokenizer")
        tokenizer_dir = tmp / "tokenizer"
    model = CausalPerceiverIO.from_preset(config.preset, video_shape=shape, **overrides)
    if pooling == "attention":
        if overrides.get("local_motion_context"):
            raise ValueError(
                "the attention-pool patch pools N latents; it does not know local_motion_context's slot"
            )
        predictor = model.predictor
        predictor.pool = AttentionPool(predictor.num_latent_channels)
        pooled = lambda latents: predictor.context_norm(predictor.pool(latents))  # noqa: E731
        object.__setattr__(predictor, "frame_context", pooled)  # shadows the method on this instance
    if (
        position_scale is not None
    ):  # shrink the grid position encoding at init (it swamps the code embeddings)
        with torch.no_grad():
            model.predictor.input_adapter.position.weight.mul_(position_scale)
            model.predictor.input_adapter.position.bias.mul_(position_scale)
    if recency_slopes is not None:
        with torch.no_grad():
            model.predictor.recency_slope.copy_(torch.tensor(recency_slopes))
    if embedding_scale is not None:
        with torch.no_grad():
            model.predictor.input_adapter.embeddings.mul_(embedding_scale)
    if motion_heads is not None:
        with torch.no_grad():
            model.predictor.motion_bias[motion_heads:] = 0.0
    if context_memory:
        predictor = model.predictor

        def memory(latents: torch.Tensor) -> torch.Tensor:
            fast = predictor.frame_context(latents)
            summaries = [predictor.timescales[name](fast).unsqueeze(2) for name in predictor.timescales]
            return torch.cat([fast.unsqueeze(2), *summaries], dim=2)

        object.__setattr__(predictor, "memory", memory)
    reconstruction = (
        partial(future_change_reconstruction_loss, horizon=reconstruct_future)
        if reconstruct_future
        else change_reconstruction_loss
        if reconstruct_changes
        else standardised_reconstruction_loss
        if reconstruct_standardised
        else None
    )
    if reconstruction is not None:  # the term on another target (shadows the method on this instance)
        predictor = model.predictor
        object.__setattr__(
            predictor, "_latent_reconstruction_loss", lambda latents: reconstruction(predictor, latents)
        )
    if linear_tokens is not None:
        attach_linear_token_readout(model, tuple(linear_tokens))
    if linear_dynamics is not None:
        attach_linear_dynamics(model, tuple(linear_dynamics))
    if joint_codes:
        attach_joint_codes(model)
    if motion_distance is not None:
        attach_motion_distance(model, motion_distance, motion_distance_space)
    if detach_motion:  # the keys and the context's slot read the motion features without training them
        for reader in (model.predictor.local_motion_keys, model.predictor.local_motion_context):
            if reader is not None:
                read = reader.forward
                object.__setattr__(reader, "forward", lambda x, read=read: read(x.detach()))
    if local_keys_std is not None:
        with torch.no_grad():
            model.predictor.local_motion_keys.weight.normal_(0.0, local_keys_std)
            model.predictor.local_motion_keys.bias.zero_()
    if local_keys_zero:
        with torch.no_grad():
            model.predictor.local_motion_keys.weight.zero_()
            model.predictor.local_motion_keys.bias.zero_()
    if not untrained_tokenizer:
        model.tokenizer.load_state_dict(VQPTTokenizer.from_pretrained(tokenizer_dir).state_dict())
    if model.config.predictor.embeddings_from_codes:
        random_rows = model.predictor.input_adapter.embeddings.detach().clone()
        model.init_embeddings_from_codebook()  # as the pipeline's build_model
        if code_share is not None:  # a share of each row's variance from the codes, the rest independent
            with torch.no_grad():
                rows = model.predictor.input_adapter.embeddings[:, :-1]  # the [MASK] row stays as it is
                rows.mul_(code_share**0.5).add_(random_rows[:, :-1], alpha=(1 - code_share) ** 0.5)
        if code_geometry is not None:
            with torch.no_grad():
                rows = model.predictor.input_adapter.embeddings[:, :-1]
                rows.copy_(geometry_rows(model.tokenizer.codebook.float(), rows.shape[-1], code_geometry))
    if context_distance is not None:
        attach_context_distance(model, context_distance, cells=context_distance_cells)
    if context_changes_only:
        attach_context_changes_only(model)
    if not next_frame_copy:
        attach_next_frame_without_copy(model)
    if whitened_slot is not None:
        attach_whitened_slot(model, whitened_slot)
    if motion_bottleneck:
        attach_motion_bottleneck(model, "extra" if motion_bottleneck == "extra" else "only")
    if frozen_motion_table:  # the motion head scores against a frozen copy of the starting code table
        head = model.predictor.local_motion_head
        head.input_adapter = [
            SimpleNamespace(embeddings=model.predictor.input_adapter.embeddings.detach().clone())
        ]
    return model, tokenizer_metrics


class PeriodicWhitening(torch.nn.Module):
    """ZCA whitening of ``[..., C]`` with running statistics (each training call folds its batch in) and a matrix
    recomputed every ``every`` training calls (an eigendecomposition of C × C is too slow for every step)."""

    def __init__(self, channels: int, eps: float, every: int = 16):
        super().__init__()
        self.whitening = ContextWhitening(channels, eps=eps)
        self.every, self.calls, self.frozen = every, 0, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.whitening.update(x)
            if self.frozen is None or self.calls % self.every == 0:
                self.frozen = self.whitening.matrix().detach().clone()
            self.calls += 1
            matrix = self.frozen
        else:
            matrix = self.whitening.matrix()  # the latest statistics
        if not self.whitening.fitted:
            return x
        return (x - self.whitening.running_mean.to(x.dtype)) @ matrix.to(x.dtype)


def attach_whitened_slot(model: CausalPerceiverIO, eps: float) -> None:
    """The motion slot's map reads the motion features ``[h · w · C]`` whitened: the fall speed lives in their
    directions of least variance, which a gradient-trained linear map learns last."""
    predictor = model.predictor
    if predictor.local_motion_context is None:
        raise ValueError("the whitened slot needs local_motion_context")
    linear = predictor.local_motion_context
    predictor.local_motion_context = torch.nn.Sequential(PeriodicWhitening(linear.in_features, eps), linear)


def attach_motion_bottleneck(model: CausalPerceiverIO, mode: str = "only") -> None:
    """The local motion term reads the motion features through the context's motion slot: the slot ``[D]`` mapped
    back to every cell's features ``[h, w, C]`` (a new linear map), so the slot must carry what the term asks of the
    features (the keys still read the features themselves). ``mode="extra"``: the features keep their own term,
    and the slot's reading of them (detached) gets a second."""
    predictor = model.predictor
    if predictor.local_motion_context is None:
        raise ValueError("the motion bottleneck needs local_motion_context (the slot it squeezes through)")
    predictor.motion_expand = torch.nn.Linear(
        predictor.num_latent_channels, predictor.local_motion_context.in_features
    )
    term = predictor._local_motion_loss

    def loss(features: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        if features is None:
            return term(features, tokens)
        if (
            mode == "extra"
        ):  # the features keep their own term; the slot gets a second one, on detached features
            slot = predictor.local_motion_context(features.detach().flatten(-3))
            return term(features, tokens) + term(predictor.motion_expand(slot).view_as(features), tokens)
        slot = predictor.local_motion_context(features.flatten(-3))
        return term(predictor.motion_expand(slot).view_as(features), tokens)

    object.__setattr__(predictor, "_local_motion_loss", loss)


class LinearTokenReadout(torch.nn.Module):
    """Experiment: logits of every cell's tokens ``[..., h, w, G, K]`` as a bilinear form of the context ``[..., D]``
    (a linear map per cell and quantizer, against a learned embedding per code): linear in the context."""

    def __init__(self, channels: int, grid: tuple[int, int], quantizers: int, codes: int, width: int = 32):
        super().__init__()
        self.shape = (*grid, quantizers, width)
        self.project = torch.nn.Linear(channels, math.prod(self.shape))
        self.codes = torch.nn.Parameter(torch.randn(quantizers, codes, width) / width**0.5)
        self.bias = torch.nn.Parameter(torch.zeros(*grid, quantizers, codes))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        cells = self.project(context).view(*context.shape[:-1], *self.shape)
        return torch.einsum("...hwgc,gkc->...hwgk", cells, self.codes) + self.bias


def attach_linear_dynamics(model: CausalPerceiverIO, horizons: tuple[int, ...]) -> None:
    """Replace the contrastive term (its weight is the variant's) by a linear map per horizon h of frame t's context
    ``[B, T, D]`` (LayerNorm's output, before whitening) to its change by frame t + h, the change detached and each
    channel over its variance in the batch (1: no better than the mean change)."""
    predictor = model.predictor
    width = predictor.num_latent_channels
    predictor.dynamics_maps = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in horizons)

    def loss(context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        terms = []
        for h, linear in zip(horizons, predictor.dynamics_maps, strict=True):
            if context.shape[1] <= h:
                continue
            now = context[:, :-h]
            change = (context[:, h:] - now).detach()
            variance = (change - change.mean((0, 1))).square().mean((0, 1)).clamp_min(1e-6)
            terms.append(((linear(now) - change).square() / variance).mean())
        return torch.stack(terms).mean() if terms else context.new_zeros(())

    object.__setattr__(predictor, "_contrastive_loss", loss)


def attach_joint_codes(model: CausalPerceiverIO) -> None:
    """Each cell's input embedding: the sum of its heads' code embeddings plus an MLP of them side by side (scaled
    by 10 on the way in: an embedding entry is ≈ 0.02; its last layer zero at the start, so the model starts as the
    recipe's)."""
    adapter = model.predictor.input_adapter
    heads, rows, channels = adapter.embeddings.shape
    adapter.joint = torch.nn.Sequential(
        torch.nn.Linear(heads * channels, 2 * channels),
        torch.nn.GELU(),
        torch.nn.Linear(2 * channels, channels),
    )
    torch.nn.init.zeros_(adapter.joint[-1].weight)
    torch.nn.init.zeros_(adapter.joint[-1].bias)
    summed_embedding = adapter.embed_ids

    def embed_ids(ids: torch.Tensor) -> torch.Tensor:
        side_by_side = adapter.embeddings[torch.arange(heads, device=ids.device), ids]  # [..., G, D]
        return summed_embedding(ids) + adapter.joint(side_by_side.flatten(-2) * 10.0)

    object.__setattr__(adapter, "embed_ids", embed_ids)


def code_distance(predictor, space: str = "codes"):
    """``distance(logits [..., G, K], ids [..., G]) → [...]``: the squared distance between the code vectors the
    logits expect (softmax-weighted, per quantizer) and the true ones, over the true vectors' mean square: graded
    credit for a prediction near the truth. ``space="pixels"``: between the cell patches the tokenizer's patch
    decoder draws from them, blurred 3×3, over the true patches' variance."""
    cell_mlp = getattr(predictor.tokenizer.decoder, "mlp", None)
    if space == "pixels" and cell_mlp is None:
        raise ValueError("a distance in pixels needs a tokenizer with the patch decoder")
    side = predictor.tokenizer.downsample

    def distance(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        codebook = predictor.tokenizer.codebook.detach()  # [G, K, d]
        heads = torch.arange(codebook.shape[0], device=ids.device)
        expected = torch.einsum("...gk,gkd->...gd", logits.float().softmax(-1), codebook)
        true = codebook[heads, ids]
        if space == "codes":
            scale = codebook.square().sum(-1).mean() * codebook.shape[0]
            return (expected - true).square().sum((-1, -2)) / scale
        drawn = [cell_mlp(v.flatten(-2)).unflatten(-1, (-1, side, side)) for v in (expected, true)]
        blurred = [F.avg_pool2d(x.flatten(0, -4), 3, 1, 1, count_include_pad=False) for x in drawn]
        squared = (blurred[0] - blurred[1]).square().mean((-1, -2, -3)).view(expected.shape[:-2])
        return squared / blurred[1].var().clamp_min(1e-6)

    return distance


def attach_motion_distance(model: CausalPerceiverIO, weight: float, space: str = "codes") -> None:
    """Add to the local motion term, times ``weight``, the :func:`code_distance` of its head's expected codes on the
    neighbours whose tokens change."""
    predictor = model.predictor
    distance = code_distance(predictor, space)
    original = predictor._local_motion_loss

    def loss(features, tokens):
        base = original(features, tokens)
        if features is None:
            return base
        extra = features.new_zeros(())
        for logits, following, changed in predictor.local_motion_targets(features, tokens):
            changed = changed.float()
            extra = extra + (distance(logits, following) * changed).sum() / changed.sum().clamp_min(1.0)
        return base + weight * extra

    object.__setattr__(predictor, "_local_motion_loss", loss)


def rescore_context_term(model: CausalPerceiverIO, context_cross_entropy) -> None:
    """Score the pooled context's own term (the next frame named from the context alone) with
    ``context_cross_entropy(logits, target, changed, plain)`` instead of the model's cross-entropy (``plain``, which
    the other token terms keep). The context term is the one decoded without the copy prior."""
    predictor = model.predictor
    next_frame_loss, cross_entropy = predictor._next_frame_loss, predictor._cross_entropy
    reading = {"context": False}

    def context_aware_next_frame_loss(memory, tokens, term_weight, copy_prior=True, horizon=1):
        reading["context"] = not copy_prior
        try:
            return next_frame_loss(memory, tokens, term_weight, copy_prior, horizon)
        finally:
            reading["context"] = False

    def scored(logits, target, changed=None):
        if not reading["context"] or changed is None:
            return cross_entropy(logits, target, changed)
        return context_cross_entropy(logits, target, changed, cross_entropy)

    object.__setattr__(predictor, "_next_frame_loss", context_aware_next_frame_loss)
    object.__setattr__(predictor, "_cross_entropy", scored)


def attach_context_distance(
    model: CausalPerceiverIO, weight: float, space: str = "pixels", cells: str = "changed"
) -> None:
    """Add to the pooled context's own term (the next frame named from the context alone), times ``weight``, the
    :func:`code_distance` of its expected codes on the cells that change (``cells="all"``: on every cell): credit
    that grows as the named ball moves towards its true place, a fraction of a pixel at a time."""
    distance = code_distance(model.predictor, space)

    def graded_cross_entropy(logits, target, changed, plain):
        scored = torch.ones_like(changed, dtype=torch.float) if cells == "all" else changed.float()
        extra = (distance(logits, target) * scored).sum() / scored.sum().clamp_min(1.0)
        return plain(logits, target, changed) + weight * extra

    rescore_context_term(model, graded_cross_entropy)


def attach_context_changes_only(model: CausalPerceiverIO) -> None:
    """Score the pooled context's own term (the next frame named from the context alone) on the cells whose
    tokens change only: its cross-entropy averaged over those cells instead of the whole frame."""
    smoothing = model.predictor.label_smoothing

    def changed_cross_entropy(logits, target, changed, plain):
        per_id = per_id_cross_entropy(logits, target, smoothing)
        weight = changed.to(per_id.dtype)
        return (per_id.mean(-1) * weight).sum() / weight.sum().clamp_min(1.0)

    rescore_context_term(model, changed_cross_entropy)


def attach_next_frame_without_copy(model: CausalPerceiverIO) -> None:
    """The next-frame term (each earlier frame's latents name the next frame) without the copy prior of its cells'
    last tokens, as the context-prediction term already is; the masked token term keeps it."""
    predictor = model.predictor
    next_frame_loss = predictor._next_frame_loss

    def without_copy(memory, tokens, term_weight, copy_prior=True, horizon=1):
        return next_frame_loss(memory, tokens, term_weight, False, horizon)

    object.__setattr__(predictor, "_next_frame_loss", without_copy)


def attach_linear_token_readout(model: CausalPerceiverIO, horizons: tuple[int, ...]) -> None:
    """Replace the latent-reconstruction term (its weight is the variant's) by the CE of :class:`LinearTokenReadout`
    from frame t's context against the tokens of steps t + h, h in ``horizons``; the gradient reaches the encoder."""
    predictor = model.predictor
    tokenizer = model.tokenizer
    seen: dict[str, torch.Tensor] = {}
    original = predictor._predict

    def predict(tokens, num_context_frames, video, lead=0):
        tokens_with_heads = tokens if tokens.dim() == 5 else tokens.unsqueeze(-1)
        seen["tokens"] = tokens_with_heads[
            :, lead:
        ]  # the lead-in steps are the local motion encoder's history
        return original(tokens, num_context_frames, video, lead)

    def loss(latents: torch.Tensor) -> torch.Tensor:
        tokens = seen["tokens"]  # [B, T', h, w, G]
        context = predictor.frame_context(latents)  # [B, T, D]
        steps = context.shape[1]
        terms = []
        for h in horizons:
            usable = min(steps, tokens.shape[1] - h)
            if usable < 1:
                continue
            logits = predictor.linear_token_readout(context[:, :usable])
            target = tokens[:, h : h + usable]
            terms.append(F.cross_entropy(logits.flatten(0, -2).float(), target.flatten()))
        return torch.stack(terms).mean()

    h, w = _grid_of(model)
    predictor.linear_token_readout = LinearTokenReadout(
        predictor.num_latent_channels, (h, w), tokenizer.num_quantizers, tokenizer.num_codes
    )
    object.__setattr__(predictor, "_predict", predict)
    object.__setattr__(predictor, "_latent_reconstruction_loss", loss)


def _grid_of(model: CausalPerceiverIO) -> tuple[int, int]:
    with torch.no_grad():
        tokens = model.predictor.tokenize(torch.zeros(1, *model.config.video_shape))
    return tuple(tokens.shape[2:4])


def change_reconstruction_loss(predictor, latents: torch.Tensor) -> torch.Tensor:
    """The latent-reconstruction term on what changed: a linear map of frame t's context (latents pooled detached)
    reconstructs how the latents ``[B, T, N, D]`` changed from t − 1 to t, over the variance of those changes."""
    latents = latents.detach()
    if latents.shape[1] < 2:
        return latents.new_zeros(())
    context = predictor.frame_context(latents)[:, 1:]
    reconstruction = predictor.latent_readout(context.flatten(0, 1))
    latents = predictor.split_motion_slot(latents)[0]
    target = (latents[:, 1:] - latents[:, :-1]).flatten(-2).flatten(0, 1)
    target = target - target.mean(0)
    error = (reconstruction - reconstruction.mean(0) - target).square().mean()
    return error / target.square().mean().clamp_min(1e-12)


def future_change_reconstruction_loss(predictor, latents: torch.Tensor, horizon: int) -> torch.Tensor:
    """The latent-reconstruction term on what will change: a linear map of frame t's context (latents pooled
    detached) reconstructs how the latents ``[B, T, N, D]`` change from t to t + ``horizon``, over the variance of
    those changes: a position moves by its velocity times the horizon, so the map needs the velocity."""
    latents = latents.detach()
    if latents.shape[1] <= horizon:
        raise ValueError(
            f"a horizon of {horizon} needs more than {latents.shape[1]} context steps in the loss"
        )
    context = predictor.frame_context(latents)[:, :-horizon]
    reconstruction = predictor.latent_readout(context.flatten(0, 1))
    latents = predictor.split_motion_slot(latents)[0]
    target = (latents[:, horizon:] - latents[:, :-horizon]).flatten(-2).flatten(0, 1)
    target = target - target.mean(0)
    error = (reconstruction - reconstruction.mean(0) - target).square().mean()
    return error / target.square().mean().clamp_min(1e-12)


def standardised_reconstruction_loss(predictor, latents: torch.Tensor) -> torch.Tensor:
    """The latent-reconstruction term with each of the latents' N · D channels ``[B, T, N, D]`` standardised over the
    batch's frames: every channel weighs the same, where the plain term weighs each by its variance."""
    latents = latents.detach()
    reconstruction = predictor.latent_readout(predictor.frame_context(latents).flatten(0, 1))
    target = predictor.split_motion_slot(latents)[0].flatten(-2).flatten(0, 1)
    target = target - target.mean(0)
    scale = target.square().mean(0).clamp_min(1e-12).sqrt()
    return ((reconstruction - reconstruction.mean(0)) / scale - target / scale).square().mean()


def geometry_rows(codebook: torch.Tensor, channels: int, kind: str, bandwidth: float = 0.1) -> torch.Tensor:
    """Code embeddings ``[G, K, D]`` from code vectors ``[G, K, d]``, entries of std 0.02.

    "centered": a random linear map of the unit code vectors after removing each head's mean code (the codes share
    a common direction: mean cosine 0.27 on Pong and Catch). "local": random Fourier features of the unit code
    vectors, a Gaussian kernel of squared width ``bandwidth`` — codes a few degrees apart start alike, the rest
    independent, and the rows span every channel (a linear map of d-dimensional codes spans d of D).
    """
    heads, _, dim = codebook.shape
    if kind == "centered":
        codes = F.normalize(codebook - codebook.mean(1, keepdim=True), dim=-1)
        return torch.einsum("gkd,gdc->gkc", codes, torch.randn(heads, dim, channels) * 0.02)
    codes = F.normalize(codebook, dim=-1)
    frequencies = torch.randn(heads, dim, channels) / bandwidth**0.5
    phases = torch.rand(heads, 1, channels) * 2 * math.pi
    return torch.cos(torch.einsum("gkd,gdc->gkc", codes, frequencies) + phases) * (2**0.5 * 0.02)


def agent_return(config: RunConfig, model_dir: Path, steps: int, seed: int) -> float:
    from aime_rl.agents import make_agent, normalize_observations
    from aime_rl.pipeline import episode_returns, make_context_venv

    venv = normalize_observations(make_context_venv(config, model_dir, config.num_envs, seed, config.window))
    agent = make_agent(config.algo, venv, seed=seed, **config.agent_kwargs)
    agent.learn(steps)
    venv.training = False
    eval_venv = make_context_venv(config, model_dir, 4, seed + 1000, config.window, training=False)
    eval_venv = normalize_observations(eval_venv)
    eval_venv.obs_rms, eval_venv.training = venv.obs_rms, False
    returns = episode_returns(eval_venv, agent, config.eval_episodes, seed + 1000, progress=False)
    return float(np.mean(returns))


PROBE_POLICY_TARGETS = ("ball_x", "landing_x")  # chase the ball / move to where it will land


def probe_policy_returns(
    config: RunConfig, model_dir: Path, model: CausalPerceiverIO, data, episodes: int = 32
) -> dict[str, float]:
    """Catch: the mean return of fixed policies that read the context ``[D]`` only through ridge probes fit on the
    labelled frames ``data`` (its ``landing_x`` included: ``--landing``): each step the paddle moves towards the probed
    ball column ("ball_x") or landing column ("landing_x") from the probed paddle column, as
    ``CatchEnv.chaser_action`` / ``oracle_action`` do from the true state. What the context's linear read-out of
    the state is worth to a policy, without PPO's noise (one deterministic evaluation per model)."""
    from aime_rl.evaluation.fitting import fit_ridge
    from aime_rl.evaluation.split import split_by_episode, standardise
    from aime_rl.pipeline import episode_returns, make_context_venv

    features = compute_representations(data, ["context"], model=model, window=config.window)["context"]
    split = split_by_episode(data.episode_ids)
    train = np.concatenate([split.train, split.val])  # the heads' alphas by validation, then kept
    mean, std = features[train].mean(0), np.where(features[train].std(0) > 1e-8, features[train].std(0), 1.0)
    x = standardise(features, train)
    names = ("paddle_x", *PROBE_POLICY_TARGETS)
    y = np.stack([np.asarray(data.labels[name], dtype=np.float64) for name in names], axis=1)
    weight, intercept, _ = fit_ridge(x[split.train], y[split.train], x[split.val], y[split.val])
    catch = make_env(config.env, training=False).unwrapped
    dead_zone = catch.paddle_speed / (catch.size - 1) / 2

    class ProbePolicy:
        def __init__(self, target: int):
            self.target = target

        def predict(self, obs: np.ndarray, deterministic: bool = True):
            probed = ((obs - mean) / std) @ weight + intercept  # [n_envs, len(names)]
            gap = probed[:, self.target] - probed[:, 0]
            return np.where(gap > dead_zone, 2, np.where(gap < -dead_zone, 0, 1)), None

    returns = {}
    for index, name in enumerate(PROBE_POLICY_TARGETS, start=1):
        venv = make_context_venv(config, model_dir, 4, 1000, config.window, training=False)
        returns[name] = round(
            float(np.mean(episode_returns(venv, ProbePolicy(index), episodes, 1000, progress=False))), 2
        )
        venv.close()
    return returns


#: Submodules the hooks add to the predictor for their terms (removed before the model is saved and loaded again).
HOOK_HEADS = ("linear_token_readout", "dynamics_maps")


def train_and_measure(
    config: RunConfig, run: RunDir, name: str, steps: int, data, env_fn, args: argparse.Namespace
) -> dict:
    """Train variant ``name``'s context model (seeded by ``config.seed``) on the run's frozen tokenizer; probe its
    streamed context and, with ``--agent-steps``, train PPO on it once per ``--seeds``."""
    start = time.time()
    if "_sequence_length" in VARIANTS[name]:
        config = dataclasses.replace(config, sequence_length=VARIANTS[name]["_sequence_length"])
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer_metrics = build(config, run.path / "tokenizer" / "model", VARIANTS[name], Path(tmp))
        train_start = time.time()
        metrics = train_context_model(
            model,
            run.path / "replay",
            trainer_config(config, steps),
            Path(tmp) / "log",
            context_window=config.window,  # as the pipeline: the whitening sees the agent's window
        )
        train_seconds = time.time() - train_start
        for head in HOOK_HEADS:  # training heads of the hooks, not part of the model its config builds
            if hasattr(model.predictor, head):
                delattr(model.predictor, head)
        model.save_pretrained(Path(tmp) / "model")
        if args.save_models:
            shutil.copytree(Path(tmp) / "model", Path(args.save_models) / f"{name}-seed{config.seed}")
        report = probe_model(
            model.eval(),
            env_fn,
            steps=args.probe_steps,
            window=config.window,
            data=data,
            representations=("context", *args.also_probe),
            seed=0,
        )
        context = report.representations["context"]
        scores = {var: round(result.score, 3) for var, result in context.variables.items()}
        scores["overall"] = round(context.score, 3)  # not "score": a game's RAM variable may be called that
        also = {
            name: {
                var: round(result.score, 3) for var, result in report.representations[name].variables.items()
            }
            for name in args.also_probe
        }
        probe_policy = (
            probe_policy_returns(config, Path(tmp) / "model", model, data) if args.probe_policy else {}
        )
        returns = (
            [agent_return(config, Path(tmp) / "model", args.agent_steps, s) for s in args.seeds]
            if args.agent_steps
            else []
        )
    result = {
        "model_seed": config.seed,
        "scores": scores,
        **{f"scores_{name}": value for name, value in also.items()},
        "tokenizer": tokenizer_metrics,
        "accuracy": metrics.get("next_frame_accuracy"),
        "copy_last": metrics.get("copy_last_accuracy"),
        "returns": returns,
        **({"probe_policy": probe_policy} if probe_policy else {}),
        "seconds": round(time.time() - start, 1),
        "train_seconds": round(train_seconds, 1),
    }
    print(f"  {name} (model seed {config.seed})", json.dumps(result, default=str), flush=True)
    return result


def summarise(runs: list[dict]) -> dict:
    """One variant over several model seeds: the mean probe scores, every return (model-major) and their mean."""
    scores = {k: round(float(np.mean([r["scores"][k] for r in runs])), 3) for k in runs[0]["scores"]}
    returns = [x for r in runs for x in r["returns"]]
    also = {  # the --also-probe representations' mean scores
        key: {k: round(float(np.mean([r[key][k] for r in runs])), 3) for k in runs[0][key]}
        for key in runs[0]
        if key.startswith("scores_")
    }
    return {
        "model_seeds": [r["model_seed"] for r in runs],
        "scores": scores,
        **also,
        "returns": returns,
        "mean_return": round(float(np.mean(returns)), 3) if returns else None,
        "model_mean_returns": [round(float(np.mean(r["returns"])), 3) for r in runs if r["returns"]],
        **(
            {  # --probe-policy: each policy's return per model and their mean
                "probe_policy": {
                    name: [r["probe_policy"][name] for r in runs] for name in runs[0]["probe_policy"]
                }
            }
            if "probe_policy" in runs[0]
            else {}
        ),
        "seconds": round(sum(r["seconds"] for r in runs), 1),
    }


def markdown_table(results: dict[str, dict]) -> str:
    """The variants side by side: every probe score, the mean return and the returns (model-major)."""
    variables = list(next(iter(results.values()))["scores"])
    policies = list(next(iter(results.values())).get("probe_policy", {}))
    lines = [
        "| variant | "
        + " | ".join(variables + [f"probe policy: {p}" for p in policies])
        + " | mean return | returns |",
        "|---|" + "---:|" * (len(variables) + len(policies)) + "---:|---|",
    ]
    for name, result in results.items():
        returns = result["returns"]
        mean = f"{np.mean(returns):.2f}" if returns else "–"
        played = [_returns_cell(np.atleast_1d(result["probe_policy"][p])) for p in policies]
        lines.append(
            f"| {name} | "
            + " | ".join([f"{result['scores'][v]:.3f}" for v in variables] + played)
            + f" | {mean} | {', '.join(f'{r:+.2f}' for r in returns) or '–'} |"
        )
    return "\n".join(lines)


def _returns_cell(returns: np.ndarray) -> str:
    """The mean of returns ``[M]`` (one per model), then each one: ``-0.69 (-0.69)``."""
    return f"{returns.mean():.2f} ({', '.join(f'{r:+.2f}' for r in returns)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory with a trained tokenizer")
    parser.add_argument("--steps", type=int, default=None, help="context-model steps (default: the run's)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=[],
        help="also probe these representations on the same frames (e.g. random_cnn pixels frame_stack)",
    )
    parser.add_argument(
        "--also-probe",
        nargs="*",
        default=[],
        help="also probe these representations of each trained model (e.g. latents: its latents side by side, "
        "to tell what the latents lose from what the pooling loses)",
    )
    parser.add_argument("--probe-steps", type=int, default=3000)
    parser.add_argument(
        "--landing",
        action="store_true",
        help="Catch only: also probe the ball's landing column (what a catching policy acts on; the issue's ridge "
        "probes of position and velocity can stand still while the agents move)",
    )
    parser.add_argument(
        "--probe-policy",
        action="store_true",
        help="Catch, with --landing: also play 32 episodes with fixed policies that read the context only through "
        "ridge probes (paddle towards the probed ball column / landing column): an agent-free return per model",
    )
    parser.add_argument(
        "--probe-seed",
        type=int,
        default=1234,
        help="seed of the labelled probe frames (a ridge probe's ball vx on 3000 frames moves by a few hundredths "
        "with them: compare variants on the same frames, and check a small difference on another seed's)",
    )
    parser.add_argument(
        "--probe-episode-steps", type=int, default=None, help="cut probe episodes (long Atari games)"
    )
    parser.add_argument("--agent-steps", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="PPO seeds, per model")
    parser.add_argument(
        "--model-seeds",
        type=int,
        nargs="+",
        default=None,
        help="train each variant's context model once per seed (default: the run's seed); a trained model is "
        "itself a draw, and one model per variant cannot tell its variant from its draw",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--save-models",
        help="keep each trained context model in this directory, as <variant>-seed<model seed> (e.g. for "
        "benchmarks/motion_prediction.py)",
    )
    args = parser.parse_args()

    run = RunDir(Path(args.run))
    config = run.stored_config()
    steps = args.steps or config.context_steps
    env_fn = lambda: make_env(config.env, training=False)  # noqa: E731
    probe_env = env_fn()
    if args.landing and config.env != "catch":
        parser.error(f"--landing is for Catch runs, not {config.env!r}")
    if args.probe_policy and not args.landing:
        parser.error("--probe-policy needs --landing (its landing-column policy reads that probe)")
    data = collect_labelled(
        env_fn,
        catch_landing_labels if args.landing else default_label_fn(probe_env),
        args.probe_steps,
        seed=args.probe_seed,
        max_episode_steps=args.probe_episode_steps,
    )
    results = {}
    if args.baselines:
        report = probe_model(
            None,
            env_fn,
            steps=args.probe_steps,
            window=config.window,
            data=data,
            representations=args.baselines,
        )
        for name in args.baselines:
            probed = report.representations[name]
            scores = {var: round(result.score, 3) for var, result in probed.variables.items()}
            results[f"baseline: {name}"] = {
                "scores": {**scores, "overall": round(probed.score, 3)},
                "returns": [],
            }
            print(f"baseline: {name}", json.dumps(results[f"baseline: {name}"]), flush=True)
    for name in args.variants:
        runs = [
            train_and_measure(
                dataclasses.replace(config, seed=model_seed), run, name, steps, data, env_fn, args
            )
            for model_seed in (args.model_seeds or [config.seed])
        ]
        results[name] = runs[0] if len(runs) == 1 else summarise(runs)
        print(name, json.dumps(results[name], default=str), flush=True)
    print(markdown_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
