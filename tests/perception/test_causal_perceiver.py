"""CausalPerceiverIO: causal context, windows, streaming == offline, conditions, presets, save/load, adapters,
bad input."""

from __future__ import annotations

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO, add_lora, get_preset, lora_parameters, merge_lora
from tests.helpers import sprite_batches
from tests.perception.helpers import TIMESCALE_NAMES, stream_contexts, tiny


def test_context_has_one_vector_per_frame(model, clip):
    context = model.extract_context(clip)
    assert context.shape == (2, 12, model.context_dim)


def test_context_is_full_length_with_temporal_downsampling(clip):
    model = tiny(temporal_downsample=True)
    assert model.extract_context(clip).shape == (2, 12, model.context_dim)


@pytest.mark.parametrize("timescale", TIMESCALE_NAMES)
@pytest.mark.parametrize("temporal_downsample", [False, True])
@pytest.mark.parametrize("local_motion_frames", [0, 3])
def test_context_before_t_ignores_frames_from_t_on(clip, timescale, temporal_downsample, local_motion_frames):
    model = tiny(temporal_downsample=temporal_downsample, local_motion_frames=local_motion_frames)
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
