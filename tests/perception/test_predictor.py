"""PerceiverTokenPredictor (through CausalPerceiverIO): the seed outputs, context prediction, generation,
training against copying the last frame, change marks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO, PredictorOutput, get_preset
from aime_rl.perception.modules.temporal import motion_marks
from aime_rl.perception.predictor import CHANGED, FIRST, UNCHANGED, change_marks
from tests.helpers import FLAT_TINY_CONFIG, sprite_batches
from tests.perception.helpers import load_without_predictor_key, stream_contexts, tiny


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


@pytest.mark.parametrize("horizon", [1, 3])
def test_the_context_predicts_horizon_steps_ahead_from_every_context_frame_but_the_last(
    clip, monkeypatch, horizon
):
    model = tiny(context_prediction_weight=1.0, context_prediction_horizon=horizon)
    asked = []
    predict_logits = model.predictor.predict_logits

    def spy(memory, ids, last_tokens):
        if memory.shape[1] == 1:  # the pooled context alone
            asked.append(tuple(ids.shape[:2]))
        return predict_logits(memory, ids, last_tokens)

    monkeypatch.setattr(model.predictor, "predict_logits", spy)
    with torch.no_grad():
        model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
    assert asked == [(2 * 4, horizon)]  # B = 2 clips × context frames 0…3, each for `horizon` steps


def test_a_context_prediction_horizon_past_the_sequence_length_is_refused_by_name():
    with pytest.raises(ValueError, match="context_prediction_horizon"):
        tiny(context_prediction_horizon=9)  # the tiny preset's sequence_length is 8


def test_a_config_written_before_the_horizon_loads_with_the_next_frame(tmp_path):
    loaded = load_without_predictor_key(tmp_path / "model", "context_prediction_horizon")
    assert loaded.predictor.config.context_prediction_horizon == 1


def test_the_small_preset_asks_the_context_alone_for_the_next_frame_and_the_paper_preset_does_not():
    assert get_preset("small").predictor.context_prediction_weight == 1.0
    assert get_preset("paper").predictor.context_prediction_weight == 0.0


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


@pytest.mark.parametrize(
    "option",
    [
        dict(mark_changes=True),
        dict(motion_attention_bias=2.0),
        dict(previous_tokens=True),
        dict(pixel_changes=True),
    ],
    ids=["change-marks", "motion-bias", "previous-tokens", "pixel-changes"],
)
def test_what_the_stream_keeps_of_the_previous_step_restarts_with_the_episode(clip, option):
    torch.manual_seed(0)
    model = tiny(**option)
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


# -- motion_attention_bias ------------------------------------------------------------------------------------------


def test_the_motion_bias_starts_on_the_changed_tokens_of_half_the_heads():
    table = tiny(motion_attention_bias=2.0).predictor.motion_bias  # tiny: 2 cross-attention heads
    assert table.tolist() == [
        [0.0, 2.0, 0.0],
        [0.0, 0.0, 0.0],
    ]  # rows: heads; columns: UNCHANGED, CHANGED, FIRST


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_stream_equals_offline_with_the_motion_bias(clip, window, temporal_downsample):
    torch.manual_seed(0)
    model = tiny(motion_attention_bias=2.0, temporal_downsample=temporal_downsample)
    with torch.no_grad():
        model.predictor.motion_bias.copy_(torch.randn(2, 3))  # every mark and head counts
        offline = model.extract_context(clip, window=window)
        online = stream_contexts(model, clip, window)
    assert torch.allclose(online, offline, atol=1e-4, rtol=0)


def test_the_motion_bias_moves_attention_onto_the_cells_that_changed():
    torch.manual_seed(0)
    model = tiny(motion_attention_bias=3.0)
    tokens = torch.randint(0, 30, (1, 1, 4, 4, 2)).expand(1, 3, 4, 4, 2).clone()  # a static frame, 3 steps
    tokens[0, 2, 1, 2] = 31  # one cell changes at the last step
    with torch.no_grad():
        biased = model.predictor.attention_to_cells(tokens, 3)[0, 2, 2]  # frame 2's weight on step 2's cells
        model.predictor.motion_bias.zero_()
        plain = model.predictor.attention_to_cells(tokens, 3)[0, 2, 2]
    others = torch.ones(4, 4, dtype=torch.bool)
    others[1, 2] = False
    assert biased[1, 2] > 5 * biased[others].mean()
    assert plain[1, 2] < 2 * plain[others].mean()


def test_a_model_with_the_motion_bias_saves_and_loads(tmp_path, clip):
    model = tiny(motion_attention_bias=2.0)
    with torch.no_grad():
        model.predictor.motion_bias.add_(0.5)  # a trained value, not the initial one
    model.save_pretrained(tmp_path / "model")
    loaded = CausalPerceiverIO.from_pretrained(tmp_path / "model").eval()
    assert loaded.predictor.config.motion_attention_bias == 2.0
    assert torch.equal(loaded.predictor.motion_bias, model.predictor.motion_bias)
    with torch.no_grad():
        assert torch.equal(loaded.extract_context(clip), model.extract_context(clip))


def test_a_config_written_before_the_motion_bias_loads_without_it(tmp_path):
    assert (
        load_without_predictor_key(tmp_path / "model", "motion_attention_bias").predictor.motion_bias is None
    )


def test_motion_marks_read_the_pixels_of_each_cell():
    video = torch.zeros(1, 3, 3, 32, 32)
    video[0, 1:, :, 3, 20] = 1.0  # a pixel appears in cell (0, 2) of the 4×4 grid at frame 1 and stays
    marks = motion_marks(video, (4, 4), threshold=0.05)
    assert marks[0, 0].eq(FIRST).all() and marks[0, 2].eq(UNCHANGED).all()
    expected = torch.full((4, 4), UNCHANGED)
    expected[0, 2] = CHANGED
    assert torch.equal(marks[0, 1], expected)
    assert torch.equal(motion_marks(video[:, 1:], (4, 4), 0.05, previous=video[:, 0])[0, 0], expected)


def test_the_motion_bias_reads_motion_from_the_pixels_not_from_flickering_tokens():
    model = tiny(motion_attention_bias=2.0)
    clip = next(sprite_batches(1, 4, 32, seed=3))
    tokens = model.predictor.tokenize(clip)
    flickering = tokens.clone()
    flickering[:, 2] = (flickering[:, 2] + 1) % 32  # every token of step 2 changes; the pixels do not
    with torch.no_grad():
        motion = model.predictor.motion_marks(clip)
        from_pixels = model.predictor.encode_tokens(flickering, 4, motion=motion)
        from_tokens = model.predictor.encode_tokens(flickering, 4)
        model.predictor.motion_bias.zero_()
        unbiased = model.predictor.encode_tokens(flickering, 4)
    assert not torch.allclose(from_pixels, from_tokens, atol=1e-4)
    assert not torch.allclose(from_pixels, unbiased, atol=1e-4)


def test_a_model_with_the_motion_bias_refuses_cached_tokens():
    model = tiny(motion_attention_bias=2.0)
    with pytest.raises(ValueError, match="motion_attention_bias"):
        model.predictor.forward_tokens(torch.zeros(1, 4, 4, 4, 2, dtype=torch.long), 2)


def test_the_predictors_motion_marks_take_uint8_frames_like_extract_context():
    model = tiny(motion_attention_bias=2.0)
    clip = next(sprite_batches(1, 4, 32, seed=3))
    as_uint8 = (clip * 255).round().to(torch.uint8)
    expected = model.predictor.motion_marks(as_uint8.float() / 255)
    assert torch.equal(model.predictor.motion_marks(as_uint8), expected)
    with pytest.raises(ValueError, match="video"):
        model.predictor.motion_marks(as_uint8[:, :, :, :16])  # wrong frame size


def test_forward_without_reconstruct_gives_the_same_losses_and_no_frames(model, clip):
    with torch.no_grad():
        full = model.predictor(clip[:, :8], num_context_frames=5)
        losses_only = model.predictor(clip[:, :8], num_context_frames=5, reconstruct=False)
    assert losses_only.reconstructed is None and "reconstructed" not in losses_only
    assert torch.equal(losses_only.loss, full.loss) and torch.equal(losses_only.logits, full.logits)
