"""The perception model refuses silently wrong inputs (ValueError naming the argument).

Each test here failed before the corresponding check existed: float frames outside [0, 1], frames of another size
than the model's, 4-channel frames, a condition for an unconditioned model, huge stream windows, empty videos and
odd dtypes and batch sizes, damaged or hand-edited model directories, and an LPIPS warning at load time.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO, VQPTTokenizer, losses
from aime_rl.perception.losses import LPIPSUnavailableWarning, PerceptualLoss
from aime_rl.training import checkpoint
from aime_rl.utils import io
from aime_rl.wrappers.preprocessing import frame_source_from, to_model_frames
from tests.helpers import FLAT_TINY_CONFIG, TINY_TOKENIZER, copy_dir, edit_config

SIZE = 32


@pytest.fixture(scope="module")
def model() -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, SIZE, SIZE)).eval()


@pytest.fixture
def clip() -> torch.Tensor:
    """Moving sprites ``[2, 4, 3, 32, 32]`` in [0, 1]."""
    return moving_sprites(2, 4, SIZE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, model) -> Path:
    directory = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory, saved_dir) -> Path:
    """``saved_dir`` with the flat ``config.json`` that versions before the nested config wrote (same weights)."""
    directory = tmp_path_factory.mktemp("flat") / "model"
    shutil.copytree(saved_dir, directory)
    (directory / "config.json").write_text(json.dumps(FLAT_TINY_CONFIG))
    return directory


# -- 1. float frames outside [0, 1] ------------------------------------------------------------------------------

ENTRY_POINTS = {
    "extract_context": (lambda m, v: m.extract_context(v), "video"),
    "stream.step": (lambda m, v: m.stream(2).step(v[:, 0]), "frames"),
    "tokenizer.encode": (lambda m, v: m.tokenizer.encode(v), "video"),
    "tokenizer.loss": (lambda m, v: m.tokenizer.loss(v), "video"),
    "tokenizer stream step": (lambda m, v: m.tokenizer.stream(2).step(v[:, 0]), "frames"),
    "predictor forward": (lambda m, v: m(v, num_context_frames=2), "videos"),
    "generate": (lambda m, v: m.generate(v, 1), "context_video"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_float_frames_in_0_255_are_refused_everywhere(model, clip, entry):
    call, name = ENTRY_POINTS[entry]
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=rf"{name} must be float in \[0, 1\].*divide by 255"),
    ):
        call(model, clip * 255)


def test_float_frames_slightly_outside_0_1_are_refused_but_tiny_noise_is_accepted(model, clip):
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=r"video must be float in \[0, 1\].*got values in \[-0\.09"),
    ):
        model.extract_context(clip - 0.1)
    noisy = clip.clone()
    noisy[0, 0, 0, 0, 0], noisy[0, 0, 0, 0, 1] = 1.0005, -0.0005  # resampling noise: within the tolerance
    with torch.no_grad():
        assert model.extract_context(noisy).shape == (2, 4, model.context_dim)


# -- 2. frames of another size than the model's frame_size --------------------------------------------------------

SIZE_ENTRY_POINTS = ["extract_context", "stream.step", "tokenizer.encode", "tokenizer stream step"]


@pytest.mark.parametrize("entry", SIZE_ENTRY_POINTS)
def test_frames_of_another_size_are_refused(model, entry):
    call, name = ENTRY_POINTS[entry]
    small = torch.rand(2, 4, 3, 16, 16)  # divisible by downsample=8: this used to give a 2x2 token grid
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=rf"{name} must have frames of the model's frame_size 32x32"),
    ):
        call(model, small)


def test_frame_size_travels_with_the_tokenizer_and_old_tokenizer_dirs_load(model, tmp_path):
    assert model.frame_size == (SIZE, SIZE) and model.tokenizer.frame_size == (SIZE, SIZE)
    model.tokenizer.save_pretrained(tmp_path / "tok")
    assert VQPTTokenizer.from_pretrained(tmp_path / "tok").frame_size == (SIZE, SIZE)
    edit_config(tmp_path / "tok", lambda c: c.pop("frame_size"))  # written before frame_size existed
    loose = VQPTTokenizer.from_pretrained(tmp_path / "tok")
    assert loose.frame_size is None
    with torch.no_grad():
        assert loose.encode(torch.rand(1, 2, 3, 16, 16))[0].shape[2:4] == (2, 2)  # any divisible size


def test_a_standalone_tokenizer_accepts_any_divisible_size():
    tokenizer = VQPTTokenizer(**TINY_TOKENIZER).eval()
    with torch.no_grad():
        assert tokenizer.encode(torch.rand(1, 2, 3, 16, 16))[0].shape[:4] == (1, 2, 2, 2)


# -- 3. condition without conditioning; 4 channels ---------------------------------------------------------------


def test_condition_for_a_model_built_without_conditioning_is_refused(model, clip):
    with torch.no_grad(), pytest.raises(ValueError, match="built without conditioning"):
        model.extract_context(clip, condition=torch.zeros(2, model.context_dim))
    with pytest.raises(ValueError, match="built without conditioning"):
        model.stream(2, condition=torch.zeros(2, model.context_dim))


def test_condition_works_when_built_with_it_and_nan_is_refused(clip):
    model = CausalPerceiverIO.from_preset(
        "tiny", video_shape=(8, 3, SIZE, SIZE), num_condition_channels=5
    ).eval()
    with torch.no_grad():
        assert model.extract_context(clip, condition=torch.randn(2, 5)).shape == (2, 4, model.context_dim)
        with pytest.raises(ValueError, match="condition contains NaN"):
            model.extract_context(clip, condition=torch.full((2, 5), float("nan")))


def test_four_channel_frames_are_not_read_as_rgba(model, clip):
    stacked = torch.cat([clip, clip[:, :, :1]], dim=2)  # [2, 4, 4, 32, 32]
    with torch.no_grad(), pytest.raises(ValueError, match="got 4 channels.*stacked frames and RGBA"):
        model.extract_context(stacked)
    grey_stack = np.zeros((84, 84, 4), np.uint8)
    with pytest.raises(ValueError, match="got 4 channels: stacked frames and RGBA frames are not supported"):
        to_model_frames(grey_stack, (SIZE, SIZE))
    space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    with pytest.raises(ValueError, match="got 4 channels"):
        frame_source_from(space, "rgb_array", "env X")


def test_grayscale_frames_are_still_supported():
    grey = np.random.default_rng(0).integers(0, 256, size=(40, 40), dtype=np.uint8)
    for frame in (grey, grey[..., None]):
        frames = to_model_frames(frame, (SIZE, SIZE))
        assert frames.shape == (1, 3, SIZE, SIZE) and torch.equal(frames[:, 0], frames[:, 2])
    assert frame_source_from(gym.spaces.Box(0, 255, (84, 84), np.uint8), None, "env") == "observation"


# -- 4. huge stream windows ----------------------------------------------------------------------------------------


def test_a_huge_window_allocates_only_what_the_frames_seen_need(model, clip):
    huge, unbounded = model.stream(2, window=10**9), model.stream(2, window=None)
    with torch.no_grad():
        online = torch.stack([huge.step(clip[:, t]) for t in range(4)], dim=1)
        for t in range(4):
            unbounded.step(clip[:, t])
        offline = model.extract_context(clip, window=10**9)
        torch.testing.assert_close(offline, model.extract_context(clip), rtol=0, atol=0)
    assert huge._token_cache.num_slots <= 8
    assert huge.nbytes() == unbounded.nbytes()
    torch.testing.assert_close(online, offline, atol=1e-4, rtol=0)


def test_a_window_cache_grows_to_the_window_then_stays_flat_and_matches_offline(model):
    video = moving_sprites(2, 24, SIZE, generator=torch.Generator().manual_seed(4))
    stream = model.stream(2, window=12)
    sizes, outputs, tokens = [], [], []
    with torch.no_grad():
        for t in range(24):
            outputs.append(stream.step(video[:, t]))
            tokens.append(stream.last_tokens)
            sizes.append(stream.nbytes())
        # Offline from the streamed tokens (a near-tie in the VQ argmin may flip a token between the streamed
        # and the offline convs; this test is about the window cache, not the tokenizer).
        latents = model.predictor.encode_tokens(torch.stack(tokens, dim=1), 24, window=12)
        offline = model.predictor.frame_context(latents)
    assert stream._token_cache.num_slots == 12
    assert sizes[0] < sizes[-1] and len(set(sizes[12:])) == 1
    torch.testing.assert_close(torch.stack(outputs, dim=1), offline, atol=1e-4, rtol=0)


# -- 5. empty videos, dtypes, batch sizes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "match"),
    [((2, 0, 3, SIZE, SIZE), "T=0"), ((0, 4, 3, SIZE, SIZE), "B=0"), ((1, 2, 3, 0, 0), "H=0, W=0")],
)
def test_empty_videos_are_refused(model, shape, match):
    with torch.no_grad(), pytest.raises(ValueError, match=rf"video must have at least one element.*{match}"):
        model.extract_context(torch.rand(shape))
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        VQPTTokenizer(**TINY_TOKENIZER).encode(torch.rand(shape))  # no frame_size: 0x0 used to pass


def test_an_empty_frame_is_refused_by_the_stream(model):
    with torch.no_grad(), pytest.raises(ValueError, match="frames must have at least one element.*H=0, W=0"):
        model.stream(1).step(torch.rand(1, 3, 0, 0))


def test_float64_float16_bfloat16_are_converted_to_the_model_dtype(model, clip):
    with torch.no_grad():
        reference = model.extract_context(clip)
        torch.testing.assert_close(model.extract_context(clip.double()), reference, rtol=0, atol=0)
        for dtype in (torch.float16, torch.bfloat16):
            low = clip.to(dtype)
            out = model.extract_context(low)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, model.extract_context(low.float()), rtol=0, atol=0)
            tokens = model.tokenizer.stream(2).step(low[:, 0])
            assert torch.equal(tokens, model.tokenizer.stream(2).step(low[:, 0].float()))


def test_integer_and_bool_frames_other_than_uint8_are_refused(model, clip):
    with torch.no_grad(), pytest.raises(ValueError, match="dtype torch.int64"):
        model.extract_context((clip * 255).long())


@pytest.mark.parametrize("batch_size", [2.5, 0, -1, True, "2"])
def test_bad_stream_batch_sizes_are_refused(model, batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        model.stream(batch_size)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        model.tokenizer.stream(batch_size)


def test_numpy_integer_batch_size_is_accepted(model, clip):
    with torch.no_grad():
        assert model.stream(np.int64(2)).step(clip[:, 0]).shape == (2, model.context_dim)


# -- 6. checksum manifest and finite weights -----------------------------------------------------------------------


def test_save_pretrained_writes_a_checksum_manifest(saved_dir):
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    weights = manifest["files"]["model.safetensors"]
    assert weights == io.file_digest(saved_dir / "model.safetensors")
    assert checkpoint.file_digest is io.file_digest  # one digest helper for checkpoints and model dirs


def test_a_flipped_byte_in_the_weights_is_refused(saved_dir, tmp_path):
    directory = copy_dir(saved_dir, tmp_path)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor: still a readable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted model file .*model\.safetensors"):
        CausalPerceiverIO.from_pretrained(directory)


def test_nan_weights_are_refused(model, tmp_path):
    broken = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, SIZE, SIZE))
    with torch.no_grad():
        broken.predictor.encoder.latents[0, 0] = float("nan")
    broken.save_pretrained(tmp_path / "nan")
    with pytest.raises(
        ValueError, match=r"model\.safetensors: tensor 'predictor\.encoder\.latents'.*NaN or inf"
    ):
        CausalPerceiverIO.from_pretrained(tmp_path / "nan")


def test_directories_without_a_manifest_still_load(model, saved_dir, tmp_path, clip, caplog):
    directory = copy_dir(saved_dir, tmp_path)
    (directory / "manifest.json").unlink()
    with caplog.at_level(logging.INFO, logger="aime_rl.utils.io"):
        loaded = CausalPerceiverIO.from_pretrained(directory).eval()
    assert "no manifest.json" in caplog.text
    with torch.no_grad():
        assert torch.equal(loaded.extract_context(clip), model.extract_context(clip))


# -- 7. hand-edited config.json -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(bogus=1), "unknown key 'bogus'"),
        (lambda c: c.pop("num_latents"), "missing key 'num_latents'"),
        (lambda c: c.pop("video_shape"), "missing key 'video_shape'"),
        (lambda c: c.update(num_latents="8"), "key 'num_latents' must be int"),
        (lambda c: c.update(num_latents=8.0), "key 'num_latents' must be int"),
        (lambda c: c.update(use_3d_conv="yes"), "key 'use_3d_conv' must be bool"),
        (lambda c: c.update(video_shape=[8, 3, 32]), "key 'video_shape' must be a list of 4 int"),
        (lambda c: c.update(dropout=None), "key 'dropout' must be float"),
        (lambda c: c.update(tokenizer_options={"bogus": 1}), "tokenizer_options: unknown key 'bogus'"),
        (
            lambda c: c.update(tokenizer_options={"patch_size": "2"}),
            "tokenizer_options: key 'patch_size' must be int",
        ),
        (lambda c: c.update(num_latents=0), "num_latents must be an integer >= 1"),
    ],
)
def test_hand_edited_configs_raise_value_error_naming_the_key(flat_dir, tmp_path, edit, match):
    """The flat ``config.json`` of earlier versions (the nested one: tests/perception/test_config.py)."""
    directory = copy_dir(flat_dir, tmp_path)
    edit_config(directory, edit)
    with pytest.raises(ValueError, match=match):
        CausalPerceiverIO.from_pretrained(directory)


@pytest.mark.parametrize(
    ("key", "value"), [("num_latents", 10**12), ("num_codes", 10**12), ("num_self_attention_layers", 10**9)]
)
def test_absurd_sizes_are_refused_before_allocating(saved_dir, tmp_path, key, value):
    directory = copy_dir(saved_dir, tmp_path)
    section = "tokenizer" if key == "num_codes" else "predictor"
    edit_config(directory, lambda c: c[section].update({key: value}))
    with pytest.raises(ValueError, match=rf"too large to build.*{key}"):
        CausalPerceiverIO.from_pretrained(directory)
    with pytest.raises(ValueError, match="too large to build"):
        CausalPerceiverIO.from_preset("tiny", **{key: value})


def test_unknown_preset_overrides_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown override 'num_latent'"):
        CausalPerceiverIO.from_preset("tiny", num_latent=4)


# -- 8. the LPIPS warning only where the perceptual term is used --------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """No LPIPS weights anywhere (as in tests/perception/test_losses.py), and a fresh warn-once registry."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    losses._WARNED_ONCE.clear()
    yield hub
    losses._WARNED_ONCE.clear()


def _lpips_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, LPIPSUnavailableWarning)]


def test_lpips_warns_only_in_training_and_once(empty_hub, tmp_path):
    video = moving_sprites(2, 2, SIZE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        built = CausalPerceiverIO.from_preset("tiny", video_shape=(2, 3, SIZE, SIZE), perceptual_weight=0.1)
        built.save_pretrained(tmp_path / "m")
        loaded = CausalPerceiverIO.from_pretrained(tmp_path / "m").eval()
        with torch.no_grad():
            loaded.extract_context(video)
        repr(loaded)
        assert _lpips_warnings(record) == []  # building, loading and inference never warn
        tokenizer = loaded.tokenizer.train()
        first = tokenizer.loss(video)
        tokenizer.loss(video)
        loaded.train()(video, num_context_frames=1)
    assert len(_lpips_warnings(record)) == 1
    assert first["perceptual_enabled"] is False and first["perceptual"].item() == 0.0
    assert tokenizer.perceptual.status.startswith("LPIPS disabled: backbone weights not found")


def test_a_lazy_perceptual_loss_follows_to_before_it_is_set_up(empty_hub):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loss = PerceptualLoss(lazy=True).double()
        assert _lpips_warnings(record) == []
        assert loss._probe.dtype == torch.float64
        assert loss.enabled is False
    assert len(_lpips_warnings(record)) == 1
