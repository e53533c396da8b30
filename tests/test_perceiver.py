"""CausalPerceiverIO and PerceiverTokenPredictor: causal context, windows, streaming == offline, prediction."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import (
    TIMESCALES,
    CausalPerceiverIO,
    PredictorOutput,
    add_lora,
    get_preset,
    lora_parameters,
    merge_lora,
)
from aime_rl.perception.predictor import CHANGED, FIRST, UNCHANGED, change_marks

from .conftest import FLAT_TINY_CONFIG, sprite_batches

TIMESCALE_NAMES = list(TIMESCALES)


def tiny(**overrides) -> CausalPerceiverIO:
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides).eval()


@pytest.fixture(scope="module")
def model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return tiny()


@pytest.fixture
def clip() -> torch.Tensor:
    return next(sprite_batches(2, 12, 32, seed=2))


def stream_contexts(model, video, window, timescale="fast", condition=None) -> torch.Tensor:
    stream = model.stream(video.shape[0], window=window, timescale=timescale, condition=condition)
    return torch.stack([stream.step(video[:, t]) for t in range(video.shape[1])], dim=1)


def test_context_has_one_vector_per_frame(model, clip):
    context = model.extract_context(clip)
    assert context.shape == (2, 12, model.context_dim)


def test_context_is_full_length_with_temporal_downsampling(clip):
    model = tiny(temporal_downsample=True)
    assert model.extract_context(clip).shape == (2, 12, model.context_dim)


@pytest.mark.parametrize("timescale", TIMESCALE_NAMES)
@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_context_before_t_ignores_frames_from_t_on(clip, timescale, temporal_downsample):
    model = tiny(temporal_downsample=temporal_downsample)
    t = 6
    changed = clip.clone()
    changed[:, t:] = torch.rand_like(changed[:, t:])
    with torch.no_grad():
        before = model.extract_context(clip, timescale=timescale)
        after = model.extract_context(changed, timescale=timescale)
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, t:], after[:, t:], atol=1e-4)


def test_window_hides_frames_older_than_the_window(clip):
    # Per-frame (2D) tokens: the tokenizer adds no temporal receptive field of its own.
    model = tiny(use_3d_conv=False)
    window, t = 4, 9
    changed = clip.clone()
    changed[:, : t - window + 1] = torch.rand_like(changed[:, : t - window + 1])
    with torch.no_grad():
        before = model.extract_context(clip, window=window)
        after = model.extract_context(changed, window=window)
        unwindowed_before = model.extract_context(clip)
        unwindowed_after = model.extract_context(changed)
    assert torch.allclose(before[:, t:], after[:, t:], atol=1e-6, rtol=0)
    assert not torch.allclose(unwindowed_before[:, t:], unwindowed_after[:, t:], atol=1e-4)


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("timescale", TIMESCALE_NAMES)
def test_stream_equals_offline(model, clip, window, timescale):
    with torch.no_grad():
        offline = model.extract_context(clip, window=window, timescale=timescale)
        online = stream_contexts(model, clip, window, timescale)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_stream_equals_offline_with_temporal_downsampling(clip, temporal_downsample):
    model = tiny(temporal_downsample=temporal_downsample)
    with torch.no_grad():
        assert torch.allclose(
            stream_contexts(model, clip, 6), model.extract_context(clip, window=6), atol=1e-4, rtol=0
        )


def test_reset_of_one_row_matches_a_fresh_stream(model, clip):
    other_episode = next(sprite_batches(2, 12, 32, seed=7))
    reset_at = 5
    stream = model.stream(2, window=4)
    with torch.no_grad():
        for t in range(reset_at):
            stream.step(clip[:, t])
        stream.reset(torch.tensor([False, True]))
        outputs = []
        for t in range(reset_at, 12):
            frames = torch.stack([clip[0, t], other_episode[1, t - reset_at]])
            outputs.append(stream.step(frames))
        online = torch.stack(outputs, dim=1)
        fresh_row1 = stream_contexts(model, other_episode[1:, : 12 - reset_at], window=4)
        continuing_row0 = model.extract_context(clip[:1], window=4)[:, reset_at:]
    assert torch.allclose(online[1:], fresh_row1, atol=1e-4, rtol=0)
    assert torch.allclose(online[:1], continuing_row0, atol=1e-4, rtol=0)


def test_stream_memory_is_flat_once_the_window_is_full(model, clip):
    stream = model.stream(2, window=4)
    sizes = []
    with torch.no_grad():
        for t in range(24):
            stream.step(clip[:, t % 12])
            sizes.append(stream.nbytes())
    assert len(set(sizes[4:])) == 1


def test_stream_without_window_grows_with_history(model, clip):
    stream = model.stream(2, window=None)
    with torch.no_grad():
        for t in range(12):
            stream.step(clip[:, t])
    assert stream._token_cache.num_slots >= 12


def test_condition_changes_the_context_and_stays_causal(clip):
    model = tiny(num_condition_channels=6)  # a model built without conditioning refuses condition=
    goal_a, goal_b = torch.randn(2, 6), torch.randn(2, 6)
    with torch.no_grad():
        a = model.extract_context(clip, condition=goal_a)
        b = model.extract_context(clip, condition=goal_b)
        online = stream_contexts(model, clip, None, condition=goal_a)
    assert not torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(online, a, atol=1e-4, rtol=0)


def test_timescales_give_different_summaries(model, clip):
    with torch.no_grad():
        contexts = {name: model.extract_context(clip, timescale=name) for name in TIMESCALE_NAMES}
    assert not torch.allclose(contexts["fast"], contexts["medium"], atol=1e-3)
    assert not torch.allclose(contexts["medium"], contexts["slow"], atol=1e-3)


def test_context_is_differentiable(clip):
    model = tiny()
    model.extract_context(clip).pow(2).mean().backward()
    assert model.predictor.encoder.latents.grad.abs().sum() > 0


def test_save_and_load_reproduce_the_context(model, clip, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(loaded.extract_context(clip), model.extract_context(clip))


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_presets_build(name):
    model = CausalPerceiverIO.from_preset(name, perceptual_weight=0.0)
    assert model.context_dim == {"tiny": 32, "small": 256, "paper": 256}[name]
    assert model.tokenizer is model.predictor.tokenizer


def test_the_seed_preset_still_works_as_a_deprecated_alias_of_paper():
    with pytest.warns(DeprecationWarning, match="now called 'paper'"):
        config = get_preset("seed", frame_size=32)
    assert config == get_preset("paper", frame_size=32)
    with pytest.warns(DeprecationWarning, match="now called 'paper'"):
        model = CausalPerceiverIO.from_preset("seed", perceptual_weight=0.0)
    assert model.config == get_preset("paper", perceptual_weight=0.0)


def test_seed_defaults():
    config = CausalPerceiverIO(perceptual_weight=0.0).config
    assert (config.num_latents, config.num_latent_channels, config.num_codes, config.downsample) == (
        128,
        256,
        1024,
        8,
    )
    assert config.video_shape == (16, 3, 64, 64) and config.num_self_attention_layers == 6


# -- predictor -----------------------------------------------------------------------------------------------------


def test_forward_returns_the_seed_outputs(model, clip):
    with torch.no_grad():
        out = model(clip[:, :8], num_context_frames=5)
    assert out["reconstructed"].shape == (2, 8, 3, 32, 32)
    assert out["predicted_tokens"].shape == (2, 3, 4, 4, 2)
    assert out["logits"].shape == (2, 3, 4, 4, 2, 32)
    assert out["perceptual_enabled"] is False


def test_return_dict_false_gives_a_tuple(model, clip):
    with torch.no_grad():
        reconstructed, predicted, logits, loss = model(clip[:, :8], num_context_frames=5, return_dict=False)
    assert reconstructed.shape == (2, 8, 3, 32, 32) and predicted.shape[1] == 3 and loss.dim() == 0


def test_forward_output_has_typed_fields_and_reads_like_the_dict_it_replaces(model, clip):
    with torch.no_grad():
        out = model(clip[:, :8], num_context_frames=5)
    assert isinstance(out, PredictorOutput)
    assert out.logits is out["logits"] and out.loss is out.get("loss") and out.get("nope", 1) == 1
    assert list(out) == list(out.keys()) == [f.name for f in dataclasses.fields(PredictorOutput)]
    assert {**out}.keys() == dict(out.items()).keys() and "mask" in out and "nope" not in out
    seed_tuple = (out.reconstructed, out.predicted_tokens, out.logits, out.loss)
    assert all(a is b for a, b in zip(out.to_tuple(), seed_tuple, strict=True))
    losses = model.predictor.forward_tokens(model.predictor.tokenize(clip[:, :8]), num_context_frames=5)
    assert losses.reconstructed is None and "reconstructed" not in losses and len(losses) == len(out) - 1
    with pytest.raises(KeyError):
        losses["reconstructed"]


def test_context_prediction_loss_is_off_by_default_and_counts_when_weighted(clip):
    torch.manual_seed(0)
    plain = tiny()
    torch.manual_seed(0)
    weighted = tiny(context_prediction_weight=0.5)
    with torch.no_grad():
        off, on = plain(clip[:, :8], num_context_frames=5), weighted(clip[:, :8], num_context_frames=5)
    assert off["context_prediction_loss"] == 0 and on["context_prediction_loss"] > 0
    torch.testing.assert_close(on["loss"], off["loss"] + 0.5 * on["context_prediction_loss"])


def test_context_prediction_reads_the_pooled_context_only(clip, monkeypatch):
    model = tiny(context_prediction_weight=1.0)
    seen = []
    predict_logits = model.predictor.predict_logits

    def spy(memory, ids, last_tokens):
        seen.append(memory.shape[1])
        return predict_logits(memory, ids, last_tokens)

    monkeypatch.setattr(model.predictor, "predict_logits", spy)
    model(clip[:, :8], num_context_frames=5)["context_prediction_loss"].backward()
    num_latents = model.config.num_latents
    assert seen == [
        num_latents + 2,
        num_latents + 2,
        1,
    ]  # future, next-frame from latents, next-frame from c_t
    assert model.predictor.encoder.latents.grad.abs().sum() > 0  # it trains the encoder through the context


@pytest.mark.parametrize("method", ["maskgit", "autoregressive"])
def test_generate_returns_valid_ids_and_frames(model, clip, method):
    out = model.generate(clip[:, :4], num_frames=3, method=method, steps=4)
    assert out["tokens"].shape == (2, 3, 4, 4, 2)
    assert out["tokens"].min() >= 0 and out["tokens"].max() < model.tokenizer.num_codes
    assert out["frames"].shape == (2, 3, 3, 32, 32)
    assert out["frames"].min() >= 0 and out["frames"].max() <= 1


def test_maskgit_keeps_known_tokens(model):
    predictor = model.predictor
    memory = torch.randn(1, predictor.encoder.num_latents + 2, model.context_dim)
    last_tokens = torch.zeros(1, 4, 4, 2, dtype=torch.long)
    generated = predictor._maskgit(
        memory, last_tokens, (1, 2, 4, 4), steps=6, temperature=1.0, generator=None
    )
    assert (generated != predictor.input_adapter.mask_id).all()


def interleaved_sprites(batch_size: int, num_frames: int, seed: int) -> torch.Tensor:
    """Two 16×16 sprite videos interleaved frame by frame: frame t+1 continues frame t−1, not frame t."""
    g = torch.Generator().manual_seed(seed)
    first, second = (
        moving_sprites(batch_size, num_frames, 16, sprite_size=4, max_speed=1.5, generator=g) for _ in "ab"
    )
    first[:, 1::2] = second[:, 1::2]
    return first


def test_training_lowers_the_loss_and_beats_copying_the_last_frame():
    torch.manual_seed(0)
    # Per-frame (2D) tokens, so that equal frames give equal tokens even in an untrained tokenizer.
    model = CausalPerceiverIO.from_preset(
        "tiny",
        video_shape=(8, 3, 16, 16),
        downsample=4,
        use_3d_conv=False,
        num_latents=16,
        num_latent_channels=64,
        num_quantizers=1,
        num_codes=16,
        dropout=0.0,
    )
    with torch.no_grad():
        model.tokenizer.train().loss(interleaved_sprites(16, 8, seed=0))  # data-initialised codebook
    held_out = interleaved_sprites(16, 8, seed=5)
    tokens = model.predictor.tokenize(held_out)
    copy_last_accuracy = (tokens[:, -2] == tokens[:, -1]).float().mean().item()

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            return model(held_out, num_context_frames=7)

    initial = evaluate()
    optimizer = torch.optim.Adam(model.predictor.trainable_parameters(), lr=1e-3)
    model.train()
    model.tokenizer.eval()
    for step in range(60):
        loss = model(interleaved_sprites(8, 8, seed=100 + step), num_context_frames=4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = evaluate()
    assert final["token_loss"] < 0.9 * initial["token_loss"]
    assert final["accuracy"] > copy_last_accuracy + 0.05


# -- adapters ------------------------------------------------------------------------------------------------------


def test_lora_trains_adapters_only_and_merges_exactly(clip):
    model = tiny()
    base = {k: v.clone() for k, v in model.predictor.state_dict().items()}
    add_lora(model.predictor.encoder, rank=4)
    optimizer = torch.optim.SGD(lora_parameters(model.predictor.encoder), lr=0.1)
    for _ in range(3):
        loss = model.extract_context(clip[:, :6]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in model.predictor.state_dict().items():
        if "lora_" not in name:
            original = base.get(name, base.get(name.replace(".base.", ".")))
            assert torch.equal(value, original), name
    with torch.no_grad():
        unmerged = model.extract_context(clip)
        merge_lora(model.predictor.encoder)
        merged = model.extract_context(clip)
    assert torch.allclose(merged, unmerged, atol=1e-5)


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, v: m.extract_context(v[0]), "video"),
        (lambda m, v: m.extract_context(v[:, :, :1]), "channels"),
        (lambda m, v: m.extract_context(v, window=0), "window"),
        (lambda m, v: m.extract_context(v, timescale="weekly"), "timescale"),
        (lambda m, v: m.extract_context(v, condition=torch.zeros(2, 3)), "condition"),
        (lambda m, v: m(v, num_context_frames=12), "num_context_frames"),
        (lambda m, v: m(v, num_context_frames=0), "num_context_frames"),
        (lambda m, v: m.stream(2, window=0), "window"),
        (lambda m, v: m.stream(2).step(v[:1, 0]), "batch size"),
        (lambda m, v: m.stream(2).reset(torch.tensor([True])), "mask"),
        (lambda m, v: m.generate(v[:, :4], 2, method="beam"), "method"),
    ],
)
def test_bad_input_raises_value_error(model, clip, call, match):
    with pytest.raises(ValueError, match=match):
        call(model, clip)


def test_loading_a_tokenizer_checkpoint_as_a_perceiver_is_rejected(tmp_path, model):
    model.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CausalPerceiverIO"):
        CausalPerceiverIO.from_pretrained(tmp_path)


# -- change marks (mark_changes) -------------------------------------------------------------------------------------


def test_change_marks_flag_cells_whose_tokens_differ_from_the_step_before():
    tokens = torch.zeros(1, 3, 2, 2, 2, dtype=torch.long)
    tokens[0, 1, 0, 1, 1] = 5  # one head of one cell changes at step 1 ...
    tokens[0, 2, 0, 1, 1] = 5  # ... and stays so at step 2
    marks = change_marks(tokens)
    assert marks[0, 0].eq(FIRST).all()
    assert marks[0, 1].tolist() == [[UNCHANGED, CHANGED], [UNCHANGED, UNCHANGED]]
    assert marks[0, 2].eq(UNCHANGED).all()
    assert change_marks(tokens[:, 1:], previous=tokens[:, 0])[0, 0].tolist() == marks[0, 1].tolist()


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_stream_equals_offline_with_change_marks(clip, window, temporal_downsample):
    torch.manual_seed(0)
    model = tiny(mark_changes=True, temporal_downsample=temporal_downsample)
    with torch.no_grad():
        offline = model.extract_context(clip, window=window)
        online = stream_contexts(model, clip, window)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_change_marks_restart_with_the_episode(clip):
    torch.manual_seed(0)
    model = tiny(mark_changes=True)
    other_episode = next(sprite_batches(2, 12, 32, seed=7))
    stream = model.stream(2, window=4)
    with torch.no_grad():
        for t in range(5):
            stream.step(clip[:, t])
        stream.reset(torch.tensor([False, True]))
        online = torch.stack([stream.step(other_episode[:, t]) for t in range(4)], dim=1)
        fresh = model.extract_context(other_episode[1:, :4], window=4)
    assert torch.allclose(online[1:], fresh, atol=1e-4, rtol=0)


def test_change_marks_change_the_context():
    torch.manual_seed(0)
    model = tiny(mark_changes=True)
    clip = next(sprite_batches(1, 6, 32, seed=3))
    with torch.no_grad():
        with_marks = model.extract_context(clip)
        model.predictor.change_embedding.zero_()
        without = model.extract_context(clip)
    assert not torch.allclose(with_marks, without, atol=1e-4)


def test_a_model_with_change_marks_saves_and_loads(tmp_path, clip):
    model = tiny(mark_changes=True)
    model.save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model").eval()
    assert loaded.predictor.mark_changes
    with torch.no_grad():
        assert torch.equal(loaded.extract_context(clip), model.extract_context(clip))


def test_a_config_written_before_change_marks_loads_without_them(tmp_path):
    tiny().save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    config = dict(FLAT_TINY_CONFIG)  # the flat format of the versions before change marks
    del config["mark_changes"]
    config_path.write_text(json.dumps(config))
    assert not CausalPerceiverIO.from_pretrained(tmp_path / "model").predictor.mark_changes
