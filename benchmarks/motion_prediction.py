"""Does a context model predict where Catch's ball goes next? Its next-frame prediction, decoded to pixels.

The issue-13 probes ask the context for the ball's velocity; the model's own objective asks it for the next frame,
which needs the same thing. This checks that objective where it matters. Random-policy Catch clips at the model's
frame size: frames t − k … t − 1 seen, frame t predicted with every token masked (as in evaluation), clips in which a
ball landed skipped (a new ball's motion cannot be known). The prediction is decoded two ways: the most likely codes
("argmax", what ``reconstructed`` shows) and the expected code vectors ("soft", the mean the token distribution
says); the true frame's own tokens, decoded, are the reference (a perfect prediction of the tokens). A model with
``local_motion_frames`` gets a fourth row: its local motion encoder's own head, each cell's next tokens from the
seen frames' tokens (expected code vectors). The ball's column in a frame is the centroid of its pixels (Catch's
ball is the only yellow thing). Each predicted step is decoded on its own, as the per-frame patch decoder of the
"small" preset does; a decoder with 3-D convolutions would see only that step.

Per model, a markdown row per decoding: the share of predicted frames that show the ball (at least 30 % of the true
frame's yellow), and on those frames the mean error of the predicted column against the true one, copy-last's (the
last seen frame's) on the same frames, and the correlation of the predicted displacement with the true one (a
model that predicts the motion: near 1; one that keeps the ball where it was: 0).

    python benchmarks/motion_prediction.py --model runs/demo/model [--model other/model] [--steps 1500]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from einops import rearrange

from aime_rl.envs.catch import CatchEnv
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers.preprocessing import to_model_frames

SHOWS_BALL = 0.3  # a predicted frame shows the ball with at least this share of the true frame's yellow
YELLOW = 0.2  # a pixel is part of the ball above this yellowness (red minus blue, in [0, 1])


def random_policy_clips(
    steps: int, frame_size: tuple[int, int], seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Frames float ``[N, 3, H, W]`` in [0, 1] of one random-policy run of Catch (episodes back to back), and bool
    ``[N]``: whether a ball landed (or an episode began) at that step."""
    env, rng = CatchEnv(size=64), np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    frames, new_ball = [observation], [True]
    for _ in range(steps):
        observation, reward, terminated, _, _ = env.step(int(rng.integers(3)))
        if terminated:
            observation, _ = env.reset()
        frames.append(observation)
        new_ball.append(bool(reward) or terminated)
    return to_model_frames(np.stack(frames), frame_size).float() / 255, np.array(new_ball)


def yellowness(frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[N, 3, H, W]`` → how yellow each pixel is ``[N, H, W]`` (red minus blue, clamped at 0)."""
    return (frames[:, 0] - frames[:, 2]).clamp_min(0)


def ball_columns(frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[N, 3, H, W]`` → the ball's column (centroid of its pixels, NaN without any) and its yellow mass
    (over the same pixels: a faint yellow haze is not a ball), ``[N]`` each."""
    yellow = yellowness(frames)
    weight = torch.where(yellow > YELLOW, yellow, torch.zeros_like(yellow)).sum(1)  # [N, W]
    columns = (weight * torch.arange(weight.shape[-1])).sum(-1) / weight.sum(-1)
    return columns.numpy(), weight.sum(-1).numpy()


def predicted_frames(model: CausalPerceiverIO, clips: torch.Tensor, context: int) -> tuple[torch.Tensor, ...]:
    """Clips ``[B, context + 1, 3, H, W]`` → each last frame ``[B, 3, H, W]`` three ways: the model's prediction
    decoded from the most likely codes and from the expected code vectors, and — the reference — the true frame
    through the tokenizer (what a perfect prediction of the tokens would show); a fourth for a model with
    ``local_motion_frames``: its local motion encoder's own head, decoded from the expected code vectors."""
    predictor, tokenizer = model.predictor, model.predictor.tokenizer
    with torch.no_grad():
        out = predictor(clips, num_context_frames=context)
        argmax = out["reconstructed"][:, -1]
        soft = tokenizer.quantizer.soft_lookup(out["logits"][:, -1:].float().softmax(-1))
        soft = tokenizer.decode_latents(rearrange(soft, "b t h w c -> b c t h w"))[:, -1]
        true = tokenizer.decode(tokenizer.encode(clips)[0])[:, -1]
        frames = [argmax, soft.clamp(0, 1), true]
        # the local motion encoder's own head, from the seen frames' tokens
        if predictor.local_motion is not None:
            seen = predictor.tokenize(clips[:, :context])
            features = predictor.local_motion_features(seen)[:, -1:]
            logits = predictor.local_motion_logits(features)[..., 4, :, :]  # each cell's own next tokens
            local = tokenizer.quantizer.soft_lookup(logits.float().softmax(-1))
            frames.append(
                tokenizer.decode_latents(rearrange(local, "b t h w c -> b c t h w"))[:, -1].clamp(0, 1)
            )
    return tuple(frames)


def measure(model: CausalPerceiverIO, frames: torch.Tensor, new_ball: np.ndarray, context: int) -> dict:
    """The table's numbers for one model, per decoding."""
    ends = [t for t in range(context, len(frames)) if not new_ball[t - context + 1 : t + 1].any()]
    truth, true_mass = ball_columns(frames[ends])
    last, _ = ball_columns(frames[[t - 1 for t in ends]])
    predictions: dict[str, list[torch.Tensor]] = {"argmax": [], "soft": [], "the true frame's tokens": []}
    if model.predictor.local_motion is not None:
        predictions["local motion head (soft)"] = []
    for start in range(0, len(ends), 64):
        batch = torch.stack([frames[t - context : t + 1] for t in ends[start : start + 64]])
        for name, frame in zip(predictions, predicted_frames(model, batch, context), strict=True):
            predictions[name].append(frame)
    rows = {}
    for name, chunks in predictions.items():
        column, mass = ball_columns(torch.cat(chunks))
        shown = (
            (mass >= SHOWS_BALL * true_mass) & np.isfinite(column) & np.isfinite(last) & np.isfinite(truth)
        )
        rows[name] = dict(
            clips=len(ends),
            shows_ball=float(shown.mean()),
            error=float(np.abs(column - truth)[shown].mean()),
            copy_last_error=float(np.abs(last - truth)[shown].mean()),
            displacement_corr=float(
                np.corrcoef(column[shown] - last[shown], truth[shown] - last[shown])[0, 1]
            ),
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", required=True, help="a context model directory (repeatable)"
    )
    parser.add_argument("--steps", type=int, default=1500, help="random-policy steps")
    parser.add_argument("--context", type=int, default=5, help="frames seen before the predicted one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    print(
        "| model | decoding | clips | frames showing the ball | column error (px) | copy-last's | "
        "displacement correlation |\n|---|---|---:|---:|---:|---:|---:|"
    )
    for path in args.model:
        model = CausalPerceiverIO.from_pretrained(path).eval()
        frames, new_ball = random_policy_clips(args.steps, model.frame_size, args.seed)
        for name, row in measure(model, frames, new_ball, args.context).items():
            print(
                f"| {path} | {name} | {row['clips']} | {row['shows_ball']:.2f} | {row['error']:.2f} | "
                f"{row['copy_last_error']:.2f} | {row['displacement_corr']:.3f} |"
            )


if __name__ == "__main__":
    main()
