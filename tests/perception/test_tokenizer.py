"""VQPTTokenizer: shapes, causality, streaming == offline, VQ through the tokenizer, training, save/load, bad
input, the patchify stem."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from aime_rl.perception import TokenizerConfig, TokenizerEncoding, TokenizerLoss, VQPTTokenizer
from tests.helpers import sprite_batches

CONFIGS = [
    dict(use_3d_conv=use_3d, downsample=ds, num_quantizers=g, temporal_downsample=td)
    for use_3d, ds, g, td in itertools.product([True, False], [4, 8], [1, 4], [False, True])
]


def make(tiny_tokenizer_kwargs, **overrides) -> VQPTTokenizer:
    return VQPTTokenizer(**{**tiny_tokenizer_kwargs, **overrides}).eval()


def config_id(cfg: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_encode_decode_shapes(tiny_tokenizer_kwargs, video, cfg):
    tok = make(tiny_tokenizer_kwargs, **cfg)
    tokens, vq_loss, perplexity = tok.encode(video)
    b, t = video.shape[:2]
    grid = 32 // cfg["downsample"]
    t_tokens = t // 2 if cfg["temporal_downsample"] else t
    expected = (b, t_tokens, grid, grid) + ((cfg["num_quantizers"],) if cfg["num_quantizers"] > 1 else ())
    assert tokens.shape == expected and tokens.dtype == torch.int64
    assert vq_loss.dim() == 0 and perplexity.shape == (cfg["num_quantizers"],)
    assert tok.decode(tokens).shape == video.shape


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_tokens_are_the_tokens_of_encode(tiny_tokenizer_kwargs, video, cfg):
    tok = make(tiny_tokenizer_kwargs, **cfg)
    tok.train().loss(video)  # codes from the data (k-means initialisation), not the random start
    tok.eval()
    tokens = tok.tokens(video)
    assert torch.equal(tokens, tok.encode(video).tokens) and not tokens.requires_grad


def test_seed_defaults_give_8x8_tokens_with_4_heads():
    tok = VQPTTokenizer()
    assert (tok.num_codes, tok.num_quantizers, tok.downsample) == (1024, 4, 8)
    assert tok.token_grid(64, 64) == (8, 8)
    assert tok.config.commitment_weight == 0.05 and tok.config.use_3d_conv


@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_tokens_before_t_ignore_frames_from_t_on(tiny_tokenizer_kwargs, video, temporal_downsample):
    tok = make(tiny_tokenizer_kwargs, temporal_downsample=temporal_downsample)
    t = 4
    changed = video.clone()
    changed[:, t:] = torch.rand_like(changed[:, t:])
    before, after = tok.encode(video)[0], tok.encode(changed)[0]
    first_affected = t // tok.temporal_factor
    assert torch.equal(before[:, :first_affected], after[:, :first_affected])
    assert not torch.equal(before[:, first_affected:], after[:, first_affected:])


@pytest.mark.parametrize("temporal_downsample", [False, True])
def test_a_static_scene_gets_the_same_tokens_at_every_time_step(
    tiny_tokenizer_kwargs, video, temporal_downsample
):
    # The past side is padded with the first frame, not zeros: no dependence on the position in the clip.
    tok = make(tiny_tokenizer_kwargs, temporal_downsample=temporal_downsample)
    static = video[:, :1].expand(-1, 8, -1, -1, -1)
    tokens = tok.encode(static)[0]
    assert all(torch.equal(tokens[:, t], tokens[:, 0]) for t in range(tokens.shape[1]))


def test_temporal_downsample_token_step_sees_frames_up_to_2k_plus_1(tiny_tokenizer_kwargs, video):
    tok = make(tiny_tokenizer_kwargs, temporal_downsample=True)
    changed = video.clone()
    changed[:, 3] = torch.rand_like(changed[:, 3])  # frame 3 = 2·1 + 1 belongs to token step 1
    before, after = tok.encode(video)[0], tok.encode(changed)[0]
    assert torch.equal(before[:, 0], after[:, 0])
    assert not torch.equal(before[:, 1], after[:, 1])


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[8], CONFIGS[1]], ids=config_id)
def test_stream_equals_offline_with_a_row_reset_midway(tiny_tokenizer_kwargs, cfg):
    tok = make(tiny_tokenizer_kwargs, **cfg)
    videos = next(sprite_batches(2, 8, 32, seed=3))
    reset_at = 4
    # Row 1 restarts at frame `reset_at` on a new episode: offline that is a fresh video from there on.
    second_episode = next(sprite_batches(1, 8 - reset_at, 32, seed=4))
    offline_row0 = tok.encode(videos[:1])[0]
    offline_row1_first = tok.encode(videos[1:, :reset_at])[0]
    offline_row1_second = tok.encode(second_episode)[0]

    stream = tok.stream(batch_size=2)
    outputs = []
    for t in range(8):
        if t == reset_at:
            stream.reset(torch.tensor([False, True]))
        frame = videos[:, t].clone()
        if t >= reset_at:
            frame[1] = second_episode[0, t - reset_at]
        outputs.append(stream.step(frame))
    streamed = torch.stack(outputs, dim=1)
    if tok.temporal_factor == 2:
        streamed = streamed[:, 1::2]
        reset_at //= 2
    assert torch.equal(streamed[:1], offline_row0)
    assert torch.equal(streamed[1:, :reset_at], offline_row1_first)
    assert torch.equal(streamed[1:, reset_at:], offline_row1_second)


def test_stream_marks_frames_without_a_token_step(tiny_tokenizer_kwargs, video):
    stream = make(tiny_tokenizer_kwargs, temporal_downsample=True).stream(batch_size=2)
    first = stream.step(video[:, 0])
    assert (first == -1).all() and not stream.last_emitted.any()
    second = stream.step(video[:, 1])
    assert (second >= 0).all() and stream.last_emitted.all()


def test_stream_cache_stays_bounded(tiny_tokenizer_kwargs, video):
    stream = make(tiny_tokenizer_kwargs).stream(batch_size=2)
    sizes = []
    for t in range(12):
        stream.step(video[:, t % video.shape[1]])
        sizes.append(stream.cache.nbytes())
    assert len(set(sizes)) == 1 and sizes[0] > 0


# -- vector quantization -------------------------------------------------------------------------------------------


def test_straight_through_gradient_reaches_the_encoder(tiny_tokenizer_kwargs, video):
    tok = make(tiny_tokenizer_kwargs).train()
    out = tok.loss(video)
    out["reconstruction"].backward()
    grad = tok.encoder.stem.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_reported_perplexity_matches_the_tokens(tiny_tokenizer_kwargs, video):
    tok = make(tiny_tokenizer_kwargs, num_quantizers=1)
    tokens, _, perplexity = tok.encode(video)
    probs = torch.bincount(tokens.flatten(), minlength=tok.num_codes).float() / tokens.numel()
    expected = torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum())
    assert torch.allclose(perplexity[0], expected, atol=1e-4)


def test_training_halves_reconstruction_error_and_uses_most_codes(tiny_tokenizer_kwargs):
    tok = VQPTTokenizer(**{**tiny_tokenizer_kwargs, "downsample": 4})
    held_out = next(sprite_batches(8, 4, 32, seed=99))

    def evaluate() -> dict:
        tok.eval()
        with torch.no_grad():
            out = tok.loss(held_out)
        tok.train()
        return out

    initial = evaluate()["reconstruction"].item()
    optimizer = torch.optim.Adam(tok.parameters(), lr=2e-3)
    for batch in itertools.islice(sprite_batches(4, 4, 32, seed=0), 60):
        loss = tok.loss(batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = evaluate()
    assert final["reconstruction"].item() <= 0.5 * initial
    assert (final["usage"] > 0.5).all(), final["usage"]


def test_adapt_codebook_raises_usage_on_a_new_domain_and_keeps_the_networks(tiny_tokenizer_kwargs):
    tok = make(tiny_tokenizer_kwargs, num_codes=32).train()
    with torch.no_grad():
        tok.loss(next(sprite_batches(4, 4, 32, seed=5)))  # data-initialised codebook
    tok.eval()
    tok.quantizer.embed[:, 8:] += 100.0  # 3/4 of the codes now sit where no input of the new domain lands
    new_domain = 1.0 - next(sprite_batches(4, 4, 32, seed=6))
    networks = {k: v.clone() for k, v in tok.state_dict().items() if k.startswith(("encoder", "decoder"))}
    commitment_before = tok.encode(new_domain)[1]

    report = tok.adapt_codebook(new_domain)

    assert (report["usage_before"] <= 0.25).all()
    assert (report["usage_after"] > 0.5).all()
    assert tok.encode(new_domain)[1] < commitment_before
    assert all(torch.equal(v, tok.state_dict()[k]) for k, v in networks.items())


# -- save / load ---------------------------------------------------------------------------------------------------


def test_save_and_load_reproduce_tokens(tiny_tokenizer_kwargs, video, tmp_path):
    tok = make(tiny_tokenizer_kwargs).train()
    with torch.no_grad():
        tok.loss(video)  # data-initialised codebook, so buffers matter
    tok.eval()
    tok.save_pretrained(tmp_path / "tok")
    names = {p.name for p in (tmp_path / "tok").iterdir()}
    assert names == {"config.json", "model.safetensors", "manifest.json"}
    loaded = VQPTTokenizer.from_pretrained(tmp_path / "tok").eval()
    assert torch.equal(loaded.encode(video)[0], tok.encode(video)[0])


def test_from_config_builds_the_same_tokenizer(tiny_tokenizer_kwargs, video):
    torch.manual_seed(0)
    tok = make(tiny_tokenizer_kwargs, patch_size=2)
    torch.manual_seed(0)
    rebuilt = VQPTTokenizer.from_config(tok.config).eval()
    assert isinstance(tok.config, TokenizerConfig) and rebuilt.config == tok.config
    assert rebuilt.config is not tok.config and tok.config.patch_size == 2
    assert torch.equal(rebuilt.encode(video)[0], tok.encode(video)[0])


def test_encode_is_the_seed_tuple_with_names(tiny_tokenizer_kwargs, video):
    encoding = make(tiny_tokenizer_kwargs).encode(video)
    tokens, vq_loss, perplexity = encoding
    assert isinstance(encoding, TokenizerEncoding) and isinstance(encoding, tuple) and len(encoding) == 3
    assert tokens is encoding.tokens is encoding[0] is encoding["tokens"]
    assert vq_loss is encoding.vq_loss and perplexity is encoding.perplexity and perplexity.shape == (4,)
    with pytest.raises(KeyError):
        encoding["nope"]


def test_loss_has_typed_fields_and_reads_like_the_dict_it_replaces(tiny_tokenizer_kwargs, video):
    out = make(tiny_tokenizer_kwargs).loss(video)
    assert isinstance(out, TokenizerLoss)
    assert list(out.keys()) == [f.name for f in dataclasses.fields(TokenizerLoss)]
    assert out["total"] is out.total and out.reconstructed.shape == video.shape and out.usage.shape == (4,)
    assert out.perceptual_enabled is False and "tokens" in out
    kept = {k: v for k, v in out.items() if k not in ("tokens", "reconstructed")}  # as the trainer does
    assert set(kept) == set(out) - {"tokens", "reconstructed"}


def test_loading_a_corrupted_checkpoint_names_the_file(tiny_tokenizer_kwargs, tmp_path):
    make(tiny_tokenizer_kwargs).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        VQPTTokenizer.from_pretrained(tmp_path)


def test_loading_a_missing_directory_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        VQPTTokenizer.from_pretrained(tmp_path / "nope")


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(6, 3, 32, 32), "video"),  # missing batch dim
        (torch.rand(2, 6, 1, 32, 32), "channels"),
        (torch.rand(2, 6, 3, 30, 32), "divisible"),
        (torch.full((2, 6, 3, 32, 32), float("nan")), "NaN"),
        (torch.ones(2, 6, 3, 32, 32, dtype=torch.int32), "dtype"),
        ([[1.0]], "video"),
    ],
)
def test_bad_video_raises_value_error_naming_it(tiny_tokenizer_kwargs, bad, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_tokenizer_kwargs).encode(bad)


def test_odd_length_with_temporal_downsample_is_rejected(tiny_tokenizer_kwargs):
    with pytest.raises(ValueError, match="even"):
        make(tiny_tokenizer_kwargs, temporal_downsample=True).encode(torch.rand(1, 5, 3, 32, 32))


@pytest.mark.parametrize("bad", [torch.full((1, 2, 4, 4, 4), 16), torch.full((1, 2, 4, 4, 4), -1)])
def test_decode_rejects_out_of_range_ids(tiny_tokenizer_kwargs, bad):
    with pytest.raises(ValueError, match="ids in"):
        make(tiny_tokenizer_kwargs).decode(bad)


@pytest.mark.parametrize(
    ("tokens", "match"),
    [(torch.zeros(1, 2, 4, 4, 4), "integer"), (torch.zeros(1, 2, 4, 4, 2, dtype=torch.long), "shape")],
    ids=["float-tokens", "wrong-head-count"],
)
def test_decode_rejects_float_tokens_and_wrong_head_count(tiny_tokenizer_kwargs, tokens, match):
    tok = make(tiny_tokenizer_kwargs)
    with pytest.raises(ValueError, match=match):
        tok.decode(tokens)


def test_stream_rejects_a_wrong_batch_size(tiny_tokenizer_kwargs):
    stream = make(tiny_tokenizer_kwargs).stream(batch_size=2)
    with pytest.raises(ValueError, match="batch size"):
        stream.step(torch.rand(3, 3, 32, 32))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"downsample": 6}, "power of two"), ({"code_dim": 30}, "divisible")],
    ids=["downsample-not-a-power-of-two", "code_dim-not-divisible-by-heads"],
)
def test_invalid_constructor_arguments(tiny_tokenizer_kwargs, overrides, match):
    with pytest.raises(ValueError, match=match):
        VQPTTokenizer(**{**tiny_tokenizer_kwargs, **overrides})


PATCH_CONFIGS = [
    dict(patch_size=2, downsample=8, use_3d_conv=False, temporal_downsample=False, num_quantizers=4),
    dict(patch_size=2, downsample=4, use_3d_conv=True, temporal_downsample=True, num_quantizers=1),
    dict(patch_size=8, downsample=8, use_3d_conv=True, temporal_downsample=False, num_quantizers=4),
]


@pytest.mark.parametrize("cfg", PATCH_CONFIGS, ids=config_id)
def test_patchify_stem_keeps_the_token_grid_and_the_decoded_size(tiny_tokenizer_kwargs, video, cfg):
    tok = make(tiny_tokenizer_kwargs, **cfg)
    tokens = tok.encode(video)[0]
    assert tokens.shape[2:4] == (32 // cfg["downsample"], 32 // cfg["downsample"])
    assert tok.decode(tokens).shape == video.shape


@pytest.mark.parametrize("cfg", PATCH_CONFIGS[:2], ids=config_id)
def test_patchify_stem_streams_the_offline_tokens(tiny_tokenizer_kwargs, cfg):
    tok = make(tiny_tokenizer_kwargs, **cfg)
    videos = next(sprite_batches(2, 6, 32, seed=5))
    stream = tok.stream(batch_size=2)
    streamed = torch.stack([stream.step(videos[:, t]) for t in range(6)], dim=1)
    if tok.temporal_factor == 2:
        streamed = streamed[:, 1::2]
    assert torch.equal(streamed, tok.encode(videos)[0])


def test_patchify_stem_skips_the_full_resolution_level(tiny_tokenizer_kwargs):
    plain = make(tiny_tokenizer_kwargs, downsample=8)
    patched = make(tiny_tokenizer_kwargs, downsample=8, patch_size=2)
    assert len(patched.encoder.blocks) == len(plain.encoder.blocks) - 2  # one level: a res block + downsample
    assert patched.encoder.stem.conv.in_channels == 3 * 2 * 2


@pytest.mark.parametrize("patch_size", [3, 16, 0])
def test_patch_size_must_be_a_power_of_two_dividing_downsample(tiny_tokenizer_kwargs, patch_size):
    with pytest.raises(ValueError, match="patch_size"):
        VQPTTokenizer(**{**tiny_tokenizer_kwargs, "downsample": 8, "patch_size": patch_size})
