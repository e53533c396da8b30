"""Representations of labelled frames: the streamed context and belief (equal to the wrappers'), baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.evaluation import compute_representations, frame_stack_features, stream_features, untrained_copy
from aime_rl.evaluation.representations import whitened_as_calibrated
from aime_rl.perception import CausalPerceiverIO
from aime_rl.wrappers import ContextObservation
from tests.evaluation.helpers import WINDOW, short_catch


def test_context_streams_reset_per_episode(catch_data, model):
    data = catch_data
    features = stream_features(data, model, window=WINDOW, lanes=2)["context"]
    frames = torch.from_numpy(data.frames).permute(0, 3, 1, 2)  # 64×64 already: no resize
    with torch.inference_mode():
        for episode in data.episode_slices():
            stream = model.stream(1, window=WINDOW)
            fresh = torch.cat([stream.step(frames[i : i + 1]) for i in range(episode.start, episode.stop)])
            np.testing.assert_allclose(features[episode], fresh.numpy(), atol=1e-4)


def test_context_and_belief_equal_the_wrapper(catch_data, model, vrnn):
    """The wrapper's observations, replayed with the recorded actions, are the probed belief features."""
    data = catch_data
    features = stream_features(data, model, window=WINDOW, world_model=vrnn, lanes=3)
    assert features["belief"].shape == (len(data), model.context_dim + vrnn.belief_dim)
    env = ContextObservation(short_catch(), model, window=WINDOW, world_model=vrnn)
    starts = data.episode_starts()
    observations = []
    for i in range(len(data)):
        if i == 0:
            obs, _ = env.reset(seed=3)
        elif starts[i]:
            obs, _ = env.reset()
        else:
            obs, *_ = env.step(int(data.actions[i - 1]))
        observations.append(obs)
    np.testing.assert_allclose(features["belief"], np.stack(observations), atol=1e-4)
    np.testing.assert_allclose(features["context"], features["belief"][:, : model.context_dim])


def test_baselines_shapes_and_frame_stack_stays_in_episode(catch_data, model):
    data = catch_data
    stacked = frame_stack_features(data, size=(8, 8), stack=3)
    assert stacked.shape == (len(data), 3 * 3 * 8 * 8)
    first = np.flatnonzero(data.episode_starts())[1]  # the second episode's first frame
    block = 3 * 8 * 8
    assert np.array_equal(
        stacked[first, :block], stacked[first, 2 * block :]
    )  # repeats itself, not the last ep
    fresh = untrained_copy(model, seed=5)
    again = untrained_copy(model, seed=5)
    assert fresh.config == model.config
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters(), strict=True))


def test_latents_are_what_the_context_is_pooled_from(catch_data, model):
    """The "latents" representation: each frame's N latents side by side; pooled, they give its context."""
    features = stream_features(catch_data, model, window=WINDOW, lanes=2, latents=True)
    n, d = model.predictor.encoder.num_latents, model.context_dim
    assert features["latents"].shape == (len(catch_data), n * d)
    with torch.no_grad():
        pooled = model.predictor.frame_context(torch.from_numpy(features["latents"]).unflatten(1, (n, d)))
    np.testing.assert_allclose(pooled.numpy(), features["context"], atol=1e-4)


def test_the_probe_computes_latents_beside_the_context(catch_data, model):
    features = compute_representations(catch_data, ("context", "latents"), model, window=WINDOW, lanes=2)
    assert list(features) == ["context", "latents"]
    assert features["latents"].shape[1] == model.predictor.encoder.num_latents * model.context_dim


def test_the_untrained_baseline_is_whitened_like_a_calibrated_model(catch_data):
    """A fresh model's whitening is the identity; the baseline fits it to its own contexts, as train-context fits a
    trained model's, so the probe compares architectures, not a whitened context with an unwhitened one."""
    torch.manual_seed(0)
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), context_whitening=True).eval()
    features = compute_representations(catch_data, ("untrained",), model, window=WINDOW, lanes=2)["untrained"]
    # ZCA: unit variance along the directions the contexts span (a fresh model's raw contexts barely move: their
    # largest eigenvalue is ≈ 0.006 here), centred
    eigenvalues = np.linalg.eigvalsh(np.cov(features, rowvar=False))[::-1]
    np.testing.assert_allclose(eigenvalues[:8], 1.0, atol=0.05)
    assert np.abs(features.mean(0)).max() < 1e-3


def test_whitening_a_fitted_models_contexts_again_is_refused():
    fitted = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), context_whitening=True).eval()
    fitted.predictor.whitening["fast"].update(torch.randn(16, fitted.context_dim), cumulative=True)
    with pytest.raises(ValueError, match="already fitted"):
        whitened_as_calibrated(fitted, np.zeros((4, fitted.context_dim), np.float32))
