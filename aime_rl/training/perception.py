"""Train the perception stack from a replay store: the tokenizer first, then the context model (predictor).

Both use :class:`~aime_rl.training.trainer.Trainer` (AdamW, warm-up + cosine, clipping, NaN guard, checkpoints,
exact resume, DDP) on windows ``[B, T, 3, H, W]`` sampled from the store's training episodes, and evaluate on
held-out episodes:

- tokenizer: reconstruction PSNR (``eval/reconstruction_psnr``), per-head perplexity and usage, a grid of
  reconstructions;
- context model: next-frame token accuracy and PSNR against the "copy the last frame" baseline
  (``eval/next_frame_*``), and an open-loop rollout (context frames, then generated frames): a labelled GIF
  ``rollout/open_loop`` (rows truth / model / |error|) and per-step PSNR ``rollout/psnr/step_k`` next to the
  copy-last baseline ``rollout/copy_last_psnr/step_k`` (``k = 1 … H``) — the same rollout tags as the world model's
  trainer. The tag scheme is documented in :mod:`aime_rl.utils.tensorboard`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from ..perception import CausalPerceiverIO, PerceiverTokenPredictor, VQPTTokenizer
from ..perception.losses import foreground_mask, foreground_mse, static_cells, token_stability
from ..replay.dataset import ReplayWindowDataset
from ..utils import metrics
from ..utils.tensorboard import (
    ROLLOUT_PREFIX,
    add_image_grid,
    add_rollout_gif,
    add_rollout_psnr,
    add_text_once,
)
from .token_cache import TokenWindowDataset, build_token_cache
from .trainer import Trainer, TrainerConfig

#: TensorBoard tags of the held-out metrics (the rollout tags are :func:`log_open_loop_rollout`'s); see
#: :mod:`aime_rl.utils.tensorboard`.
TOKENIZER_TAGS = {
    "psnr": "eval/reconstruction_psnr",
    "foreground_psnr": "eval/foreground_psnr",
    "token_stability": "eval/token_stability",
}
NEXT_FRAME_TAGS = {
    "next_frame_accuracy": "eval/next_frame_accuracy",
    "copy_last_accuracy": "eval/next_frame_copy_last_accuracy",
    "predicted_frame_psnr": "eval/next_frame_psnr",
    "copy_last_psnr": "eval/next_frame_copy_last_psnr",
}


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of two tensors in ``[0, 1]``: the PSNR of the MSE over all elements.

    :func:`aime_rl.utils.metrics.psnr` with ``dim=None``, as a float.
    """
    return float(metrics.psnr(prediction, target))


def as_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` → float in [0, 1] (float input passes through)."""
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames


def foreground_psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) over the foreground pixels of ``target [B, T, C, H, W]`` only — those that differ from the clip's
    static background (:func:`~aime_rl.perception.losses.foreground_mask`): the ball and paddle, not the wall.
    NaN when nothing moves."""
    mask = foreground_mask(target)
    if not bool(mask.any()):
        return float("nan")
    mse = foreground_mse(prediction.float().clamp(0, 1), target.float(), mask).clamp_min(1e-10)
    return float(10 * torch.log10(1.0 / mse))


def holdout_batch(store_dir: str | os.PathLike, config: TrainerConfig, batch_size: int | None = None) -> dict:
    """A fixed batch of held-out windows (falls back to all episodes when nothing is held out)."""
    for subset in ("holdout", "all"):
        try:
            source = ReplayWindowDataset(
                store_dir,
                batch_size or config.batch_size,
                config.sequence_length,
                seed=config.seed + 1,
                subset=subset,
                holdout_fraction=config.holdout_fraction,
            )
            return source[0]
        except ValueError:
            continue
    raise ValueError(
        f"no episode in {store_dir} is long enough for windows of {config.sequence_length} frames: collect "
        "longer episodes (more --collect-steps per env, or fewer --num-envs) or use a shorter --sequence-length"
    )


# -- tokenizer ---------------------------------------------------------------------------------------------------


def tokenizer_loss(model: VQPTTokenizer, batch: dict) -> dict[str, Any]:
    """Trainer loss: the tokenizer's own ``loss`` on ``batch["frames"]`` (uint8 ``[B, T, 3, H, W]``)."""
    out = model(batch["frames"])
    return {k: v for k, v in out.items() if k not in ("tokens", "reconstructed")}


def held_out_token_stability(tokens: torch.Tensor, video: torch.Tensor) -> float:
    """Token stability of ``tokens [B, T', h, w(, G)]`` on the static cells of ``video [B, T, C, H, W]`` (nan with
    temporal downsampling or T < 2)."""
    if tokens.shape[1] != video.shape[1] or video.shape[1] < 2:
        return float("nan")
    return token_stability(tokens, static_cells(video, tuple(tokens.shape[2:4])))


def tokenizer_metrics(tokenizer: VQPTTokenizer, frames: torch.Tensor) -> dict[str, Any]:
    """Held-out metrics: ``psnr``, ``foreground_psnr``, ``token_stability`` (share of static cells whose tokens did
    not flip, :func:`~aime_rl.perception.losses.token_stability`), ``perplexity`` [G], ``usage`` [G], and the
    reconstructions."""
    video = as_unit_float(frames)
    tokens, _, perplexity = tokenizer.encode(video)
    reconstructed = tokenizer.decode(tokens)
    per_head = tokens if tokens.dim() == 5 else tokens.unsqueeze(-1)
    usage = torch.tensor(
        [per_head[..., g].unique().numel() / tokenizer.num_codes for g in range(tokenizer.num_quantizers)]
    )
    return {
        "psnr": psnr(reconstructed, video),
        "foreground_psnr": foreground_psnr(reconstructed, video),
        "token_stability": held_out_token_stability(tokens, video),
        "perplexity": perplexity,
        "usage": usage,
        "reconstructed": reconstructed,
    }


def train_tokenizer(
    tokenizer: VQPTTokenizer, store_dir: str | os.PathLike, config: TrainerConfig, logdir: str | os.PathLike
) -> dict[str, Any]:
    """Train ``tokenizer`` on windows from ``store_dir``; TensorBoard and checkpoints under ``logdir``.

    Returns the last held-out metrics (``psnr``, ``perplexity``, ``usage``).
    """
    return fit_tokenizer(tokenizer, tokenizer_loss, store_dir, config, logdir)


def fit_tokenizer(
    tokenizer: VQPTTokenizer,
    loss_fn,
    store_dir: str | os.PathLike,
    config: TrainerConfig,
    logdir: str | os.PathLike,
) -> dict[str, Any]:
    """The tokenizer trained with ``loss_fn`` by a :class:`Trainer` (resumed from ``logdir``), evaluated on a fixed
    held-out batch; returns the last held-out metrics."""
    held_out = holdout_batch(store_dir, config, batch_size=min(config.batch_size, 8))
    results: dict[str, Any] = {}
    trainer = Trainer(
        tokenizer,
        loss_fn,
        config,
        logdir,
        ReplayWindowDataset.from_config(store_dir, config),
        tokenizer_evaluator(held_out["frames"], results),
    )
    trainer.fit()
    return results


def tokenizer_evaluator(frames: torch.Tensor, results: dict[str, Any]):
    """A :class:`Trainer` ``eval_fn`` that puts the held-out metrics of ``frames`` (uint8 ``[B, T, 3, H, W]``) into
    ``results`` and TensorBoard (scalars, per-head perplexity and usage, a grid of reconstructions)."""

    def evaluate(model: VQPTTokenizer, step: int, writer: SummaryWriter | None) -> None:
        metrics = tokenizer_metrics(model, frames.to(_device(model)))
        results.update({k: v for k, v in metrics.items() if k != "reconstructed"})
        if writer is None:
            return
        writer.add_scalar(TOKENIZER_TAGS["psnr"], metrics["psnr"], step)
        writer.add_scalar(TOKENIZER_TAGS["foreground_psnr"], metrics["foreground_psnr"], step)
        if metrics["token_stability"] == metrics["token_stability"]:  # not nan
            writer.add_scalar(TOKENIZER_TAGS["token_stability"], metrics["token_stability"], step)
        for g, (p, u) in enumerate(
            zip(metrics["perplexity"].tolist(), metrics["usage"].tolist(), strict=True)
        ):
            writer.add_scalar(f"eval/perplexity/{g}", p, step)
            writer.add_scalar(f"eval/usage/{g}", u, step)
        truth = as_unit_float(frames[:4, 0])
        grid = torch.cat([truth, metrics["reconstructed"][:4, 0].cpu()])
        add_image_grid(writer, "eval/reconstruction", grid, step, nrow=4)
        add_text_once(writer, "status/lpips", model.perceptual.status)

    return evaluate


def held_out_tokenizer_metrics(
    tokenizer: VQPTTokenizer, store_dir: str | os.PathLike, config: TrainerConfig
) -> dict[str, Any]:
    """The held-out metrics :func:`train_tokenizer` reports (its evaluation batch), without the reconstructions."""
    frames = holdout_batch(store_dir, config, batch_size=min(config.batch_size, 8))["frames"]
    with torch.no_grad():
        metrics = tokenizer_metrics(tokenizer.eval(), frames.to(_device(tokenizer)))
    return {k: v for k, v in metrics.items() if k != "reconstructed"}


def decoder_loss(model: VQPTTokenizer, batch: dict) -> dict[str, Any]:
    """Trainer loss of the decoder alone: the reconstruction terms of the tokenizer's loss (MSE plus the
    foreground-weighted MSE) of frames ``batch["frames"]`` (uint8 ``[B, T, 3, H, W]``) decoded from their tokens,
    which are computed without a gradient and without touching the codebook."""
    video = as_unit_float(model.check_video(batch["frames"]))
    with torch.no_grad():
        latents = model.embed_tokens(model.tokens(video))
    reconstructed = model.decode_latents(latents)
    reconstruction = torch.nn.functional.mse_loss(reconstructed, video)
    foreground = (
        foreground_mse(reconstructed, video, foreground_mask(video))
        if model.config.foreground_weight > 0
        else video.new_zeros(())
    )
    total = reconstruction + model.config.foreground_weight * foreground
    return {"total": total, "reconstruction": reconstruction, "foreground": foreground}


def train_tokenizer_decoder(
    tokenizer: VQPTTokenizer, store_dir: str | os.PathLike, config: TrainerConfig, logdir: str | os.PathLike
) -> dict[str, Any]:
    """Train only the decoder of a trained ``tokenizer`` for ``config.steps`` steps on its frozen codes
    (:func:`decoder_loss`); TensorBoard and checkpoints under ``logdir``, resumed from there.

    The encoder and the codebooks do not change, so the tokens of every frame — and whatever was made from them —
    stay as they are, while the reconstructions keep improving: at a small training budget the decoder is still far
    from converged when the codes have settled (``benchmarks/README.md``). Returns the last held-out metrics, as
    :func:`train_tokenizer` does.
    """
    decoder = {id(p) for p in tokenizer.decoder.parameters()}
    trainable = {name: p.requires_grad for name, p in tokenizer.named_parameters()}
    for p in tokenizer.parameters():
        p.requires_grad_(id(p) in decoder)
    try:
        return fit_tokenizer(tokenizer, decoder_loss, store_dir, config, logdir)
    finally:
        for name, p in tokenizer.named_parameters():
            p.requires_grad_(trainable[name])


# -- context model -----------------------------------------------------------------------------------------------


def predictor_loss_fn(num_context_frames: int, history_frames: int = 0):
    """Trainer loss for the predictor: its forward on ``batch["frames"]`` (or on cached ``batch["tokens"]``) split at
    ``num_context_frames`` after ``history_frames`` that only the local motion encoder reads (windows that long
    longer: :func:`training_windows`)."""

    def loss(model: PerceiverTokenPredictor, batch: dict) -> dict[str, Any]:
        split = dict(num_context_frames=num_context_frames, history_frames=history_frames)
        if "tokens" in batch:  # a token cache's windows
            out = model(None, tokens=batch["tokens"], **split)
        else:
            out = model(batch["frames"], reconstruct=False, **split)
        keep = (
            "token_loss",
            "next_frame_loss",
            "context_prediction_loss",
            "contrastive_loss",
            "latent_reconstruction_loss",
            "local_motion_loss",
            "perceptual",
            "accuracy",
        )
        return {"total": out["loss"], **{k: out[k] for k in keep}}

    return loss


def next_frame_metrics(predictor: PerceiverTokenPredictor, frames: torch.Tensor) -> dict[str, float]:
    """Held-out next-frame token accuracy of the model vs "copy the last frame's tokens", and predicted-frame PSNR."""
    video = as_unit_float(frames)
    tf = predictor.frames_per_token_step
    context = video.shape[1] - tf
    out = predictor(video, num_context_frames=context)
    tokens = predictor.tokenize(video)
    copy_last = (tokens[:, -2] == tokens[:, -1]).float().mean().item()
    return {
        "next_frame_accuracy": float(out["accuracy"]),
        "copy_last_accuracy": copy_last,
        "predicted_frame_psnr": psnr(out["reconstructed"][:, context:], video[:, context:]),
        "copy_last_psnr": psnr(
            video[:, context - 1 : context].expand_as(video[:, context:]), video[:, context:]
        ),
    }


def train_context_model(
    model: CausalPerceiverIO,
    store_dir: str | os.PathLike,
    config: TrainerConfig,
    logdir: str | os.PathLike,
    num_context_frames: int | None = None,
    token_cache: str | os.PathLike | None = None,
    context_window: int | None = None,
    calibration_contexts: int = 4096,
) -> dict[str, Any]:
    """Train the context model (predictor) with the tokenizer frozen; returns the last held-out metrics.

    A model with ``context_whitening`` is then calibrated (:func:`calibrate_whitening`) on about
    ``calibration_contexts`` contexts of replay windows, computed with ``context_window`` frames (the window the
    stream will use; default: the predictor's own ``window``).

    ``token_cache``: a directory where the replay's tokens are computed once (:mod:`aime_rl.training.token_cache`)
    and training windows are read from, instead of tokenizing every sampled window at every step. Used when the
    tokenizer is per token step = per frame and no perceptual term needs the frames; held-out evaluation always
    tokenizes frames.
    """
    predictor = model.predictor
    for p in predictor.tokenizer.parameters():
        p.requires_grad_(False)
    context = num_context_frames or max(config.sequence_length // 2, 1)
    held_out = holdout_batch(store_dir, config, batch_size=min(config.batch_size, 8))
    results: dict[str, Any] = {}

    def evaluate(module: PerceiverTokenPredictor, step: int, writer: SummaryWriter | None) -> None:
        frames = held_out["frames"].to(_device(module))
        metrics = next_frame_metrics(module, frames)
        results.update(metrics)
        if writer is None:
            return
        for name, value in metrics.items():
            writer.add_scalar(NEXT_FRAME_TAGS[name], value, step)
        log_open_loop_rollout(module, frames[:4], context, writer, step)

    windows = training_windows(predictor, store_dir, config, token_cache)
    cached = token_cache if isinstance(windows, TokenWindowDataset) else None
    trainer = Trainer(
        predictor,
        predictor_loss_fn(context, predictor.motion_history_frames),
        config,
        logdir,
        windows,
        evaluate,
        model_config={"class": "CausalPerceiverIO", **asdict(model.config)},  # a resume rebuilds this model
    )
    trainer.fit()
    for p in predictor.tokenizer.parameters():
        p.requires_grad_(True)
    window = predictor.window if context_window is None else context_window
    calibrate_whitening(predictor, store_dir, config, window, calibration_contexts, token_cache=cached)
    return results


def calibrate_whitening(
    predictor: PerceiverTokenPredictor,
    store_dir: str | os.PathLike,
    config: TrainerConfig,
    window: int | None,
    num_contexts: int = 4096,
    batch_size: int = 16,
    token_cache: str | os.PathLike | None = None,
) -> int:
    """The whitening statistics of a trained predictor (``context_whitening``) from about ``num_contexts``
    contexts of replay windows of the training episodes (drawn with ``config.seed``), each computed with ``window``
    frames (:meth:`PerceiverTokenPredictor.calibrate_whitening`). The windows are 4 × ``window`` frames long (at
    least ``config.sequence_length``; shorter when no episode is that long), so that most contexts see a whole
    window, as a stream's do. With ``token_cache`` (a cache :func:`build_token_cache` built for this tokenizer),
    the windows' tokens are read from it instead of tokenizing their frames again. Returns the contexts counted
    per timescale (0 without whitening)."""
    if predictor.whitening is None or num_contexts < 1:
        return 0
    lengths = [config.sequence_length]
    if window is not None and 4 * window > config.sequence_length:
        lengths.insert(0, 4 * window)
    key = "frames" if token_cache is None else "tokens"
    options = dict(
        seed=config.seed,
        subset="train" if config.holdout_fraction > 0 else "all",
        holdout_fraction=config.holdout_fraction,
    )
    for length in lengths:
        try:
            if token_cache is None:
                windows = ReplayWindowDataset(store_dir, batch_size, length, **options)
            else:
                windows = TokenWindowDataset(store_dir, token_cache, batch_size, length, **options)
            first = windows[0][key]
            break
        except ValueError:
            if length == lengths[-1]:
                raise
    device = _device(predictor)
    batches = max(1, -(-num_contexts // (batch_size * length)))
    clips = (first if i == 0 else windows[i][key] for i in range(batches))
    return predictor.calibrate_whitening(
        (clip.to(device) for clip in clips), window, tokens=token_cache is not None
    )


def training_windows(
    predictor: PerceiverTokenPredictor,
    store_dir,
    config: TrainerConfig,
    token_cache: str | os.PathLike | None,
) -> ReplayWindowDataset:
    """Frames windows, or the same windows' cached tokens when a token cache applies (see
    :func:`train_context_model`): ``config.sequence_length`` frames, after the predictor's
    :attr:`~aime_rl.perception.PerceiverTokenPredictor.motion_history_frames`."""
    config = replace(config, sequence_length=config.sequence_length + predictor.motion_history_frames)
    usable = (
        predictor.frames_per_token_step == 1
        and not predictor.perceptual_term_active()
        and not predictor.reads_frames  # motion marks and pixel changes are read from the frames
    )
    if token_cache is None or not usable:
        return ReplayWindowDataset.from_config(store_dir, config)
    build_token_cache(store_dir, predictor.tokenizer, token_cache)
    return TokenWindowDataset.from_config(store_dir, config, cache_dir=token_cache)


def log_open_loop_rollout(
    predictor: PerceiverTokenPredictor,
    frames: torch.Tensor,
    context: int,
    writer: SummaryWriter | None,
    step: int,
    prefix: str = ROLLOUT_PREFIX,
) -> dict[str, float]:
    """Generate the frames after ``context`` and log the rollout tags of :mod:`aime_rl.utils.tensorboard`.

    Writes ``{prefix}/open_loop`` (a labelled GIF, rows truth / model / |error|, green borders on the ``context``
    observed steps, red on generated ones), ``{prefix}/psnr/step_k`` (PSNR of the k-th generated frame, per frame
    then averaged over the batch, ``k = 1 … H``), ``{prefix}/copy_last_psnr/step_k`` (the same for repeating the
    last observed frame) and their ``…/mean``. Returns the scalars keyed without the prefix.
    """
    video = as_unit_float(frames)
    horizon = video.shape[1] - context
    generated = predictor.generate(video[:, :context], horizon, method="maskgit", temperature=0.5)["frames"]
    model_video = torch.cat(
        [predictor.tokenizer.decode(_tokens(predictor, video[:, :context])), generated], dim=1
    )
    truth = video[:, context:]
    model_psnr = metrics.psnr_per_step(generated, truth)
    copy_last = metrics.psnr_per_step(video[:, context - 1 : context].expand_as(truth), truth)
    if writer is not None:
        add_rollout_gif(writer, f"{prefix}/open_loop", video.cpu(), model_video.cpu(), context, step)
    return add_rollout_psnr(writer, prefix, model_psnr, copy_last, step)


def _tokens(predictor: PerceiverTokenPredictor, video: torch.Tensor) -> torch.Tensor:
    return predictor.tokenizer.tokens(video)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def save_model(model: CausalPerceiverIO, run_dir: str | os.PathLike) -> Path:
    """Save the perception model as ``run_dir/model`` (safetensors + JSON); returns the directory."""
    directory = Path(run_dir) / "model"
    model.save_pretrained(directory)
    return directory


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-able copy of a metrics dict (tensors → lists/floats)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.dim() else float(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out
