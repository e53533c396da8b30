"""GIF summaries, rollout grids and image grids land in the event file and decode to what was written; the tag
scheme of ``aime_rl.utils.tensorboard`` is what both the perception trainer and the world-model trainer write."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.metrics import psnr
from aime_rl.utils.tensorboard import (
    CONTEXT_BORDER_COLOR,
    PREDICTED_BORDER_COLOR,
    add_gif,
    add_image_grid,
    add_rollout_gif,
    add_rollout_psnr,
    add_text_once,
    encode_gif,
    label_rollout_frames,
    read_event_images,
    rollout_grid,
    rollout_psnr_scalars,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_gif(data: bytes) -> np.ndarray:
    """GIF bytes -> uint8 ``[T, H, W, 3]`` (every frame composited to RGB)."""
    gif = Image.open(io.BytesIO(data))
    return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)])


def distinct_colour_frames(num_frames: int, height: int = 6, width: int = 10) -> torch.Tensor:
    """float ``[T, 3, H, W]``: frame t is filled with a different flat colour."""
    colours = torch.rand(num_frames, 3, generator=torch.Generator().manual_seed(0))
    return colours[:, :, None, None].expand(num_frames, 3, height, width).clone()


@pytest.fixture
def writer(tmp_path):
    summary_writer = SummaryWriter(log_dir=str(tmp_path))
    yield summary_writer
    summary_writer.close()


# ------------------------------------------------------------------------------------------------ encode_gif


def test_encode_gif_header_frame_count_and_size():
    frames = distinct_colour_frames(5, height=6, width=10)
    data = encode_gif(frames, fps=10)
    assert data.startswith(b"GIF89a")
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 5
    assert gif.size == (10, 6)  # Pillow: (width, height)
    assert gif.info["loop"] == 0
    assert gif.info["duration"] == 100


def test_encode_gif_preserves_colours():
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    green = torch.zeros(1, 3, 4, 4)
    green[:, 1] = 1.0
    mixed = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))  # 16 colours: stored exactly
    frames = torch.cat([red, green, mixed])
    decoded = decode_gif(encode_gif(frames))
    assert (decoded[0] == [255, 0, 0]).all()
    assert (decoded[1] == [0, 255, 0]).all()
    expected_mixed = (mixed[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(decoded[2], expected_mixed)


def test_encode_gif_many_colours_are_approximated_closely():
    ramp = torch.linspace(0, 1, 64)
    frame = torch.stack([ramp.expand(32, 64), ramp[:32, None].expand(32, 64), 1 - ramp.expand(32, 64)])
    frames = torch.stack([frame, frame.flip(-1)])
    decoded = decode_gif(encode_gif(frames)).astype(int)
    expected = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(decoded - expected).mean() < 4


def test_encode_gif_accepts_uint8_channels_last_numpy():
    frames = np.zeros((3, 5, 7, 3), dtype=np.uint8)
    for t in range(3):
        frames[t, :, :, t] = 200
    data = encode_gif(frames)
    decoded = decode_gif(data)
    assert decoded.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(decoded, frames)


def test_encode_gif_clips_out_of_range_floats():
    frames = torch.full((2, 3, 4, 4), 1.7)
    frames[1] = -0.3
    decoded = decode_gif(encode_gif(frames))
    assert (decoded[0] == 255).all()
    assert (decoded[1] == 0).all()


@pytest.mark.parametrize(
    "frames",
    [
        torch.rand(3, 4, 4),  # rank 3
        torch.rand(2, 4, 4, 3),  # float channels last
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8),  # uint8 channels first
        torch.rand(2, 1, 4, 4),  # one channel
        torch.rand(0, 3, 4, 4),  # no frames
        torch.zeros(2, 3, 4, 4, dtype=torch.int64),  # integer, not uint8
        torch.full((2, 3, 4, 4), float("nan")),
        [[0.0]],  # not an array
    ],
)
def test_encode_gif_rejects_bad_frames(frames):
    with pytest.raises(ValueError, match="frames"):
        encode_gif(frames)


def test_encode_gif_rejects_non_positive_fps():
    with pytest.raises(ValueError, match="fps"):
        encode_gif(torch.rand(2, 3, 4, 4), fps=0)


# ----------------------------------------------------------------------------------------- event round trips


def test_add_gif_lands_in_event_file(writer, tmp_path):
    frames = distinct_colour_frames(7, height=8, width=12)
    add_gif(writer, "video/clip", frames, global_step=3)
    add_gif(writer, "video/clip", frames[:4], global_step=4)
    writer.flush()
    images = read_event_images(tmp_path)
    assert list(images) == ["video/clip"]
    first, second = images["video/clip"]
    assert first.startswith(b"GIF89a")
    assert Image.open(io.BytesIO(first)).n_frames == 7
    assert Image.open(io.BytesIO(first)).size == (12, 8)
    assert Image.open(io.BytesIO(second)).n_frames == 4


def test_add_gif_bad_frames_raise_before_writing(writer, tmp_path):
    with pytest.raises(ValueError, match="frames"):
        add_gif(writer, "video/bad", torch.rand(2, 4, 4), global_step=0)
    writer.flush()
    assert read_event_images(tmp_path) == {}


def flat_cell_video(batch: int, steps: int, size: int, seed: int) -> torch.Tensor:
    """float ``[B, T, 3, size, size]``: every frame one flat colour (so a GIF stores it exactly)."""
    colours = torch.rand(batch, steps, 3, generator=torch.Generator().manual_seed(seed))
    return colours[..., None, None].expand(batch, steps, 3, size, size).clone()


def test_add_rollout_gif_round_trip(writer, tmp_path):
    batch, steps, size, context = 2, 6, 32, 2
    truth = flat_cell_video(batch, steps, size, seed=2)
    model = flat_cell_video(batch, steps, size, seed=3)
    add_rollout_gif(writer, "plain", truth, model, context_frames=context, global_step=10, labels=False)
    add_rollout_gif(writer, "rollout/open_loop", truth, model, context_frames=context, global_step=10)
    writer.flush()
    images = read_event_images(tmp_path)
    plain, labelled = (decode_gif(images[tag][0]) for tag in ("plain", "rollout/open_loop"))
    grid_height, grid_width = 3 * (size + 2), batch * (size + 2)
    assert plain.shape == (steps, grid_height, grid_width, 3)

    # the labelled GIF is the same grid under a header strip: taller by the strip, as wide
    assert labelled.shape[0] == steps and labelled.shape[2] == grid_width
    strip = labelled.shape[1] - grid_height
    assert strip > 0
    np.testing.assert_array_equal(labelled[:, strip:], plain)
    header = labelled[:, :strip]
    for t in range(steps):
        colours = {tuple(c) for c in header[t].reshape(-1, 3)}
        assert len(colours) > 2  # not uniform: text and colour swatches
        assert (255, 255, 255) in colours  # the text
        assert (0, 255, 0) in colours and (255, 0, 0) in colours  # the border-colour legend
    # the last line shows the current step, so every frame's header differs from the previous one
    assert all((header[t] != header[t - 1]).any() for t in range(1, steps))
    # the same strip as label_rollout_frames draws
    expected = label_rollout_frames(rollout_grid(truth, model, context), context)
    np.testing.assert_array_equal(labelled, expected)


def test_add_rollout_gif_says_what_rows_and_colours_mean(writer, tmp_path):
    truth = flat_cell_video(1, 4, 16, seed=4)
    for step in (1, 2):  # two evaluations: the text is written once, the description rides on every image
        add_rollout_gif(writer, "rollout/open_loop", truth, truth, context_frames=3, global_step=step)
    writer.flush()
    descriptions, texts = [], []
    for path in sorted(tmp_path.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "rollout/open_loop":
                    descriptions.append(value.metadata.summary_description)
                elif value.tag.startswith("rollout/open_loop/description"):  # torch adds /text_summary
                    texts.append(b"".join(value.tensor.string_val).decode())
    assert len(descriptions) == 2 and len(texts) == 1
    for text in (descriptions[0], texts[0]):
        for words in ("truth", "model", "|error|", "green", "red", "3 observed", "1 imagined"):
            assert words in text


def test_label_rollout_frames_widens_narrow_videos():
    grid = rollout_grid(flat_cell_video(1, 3, 4, 0), flat_cell_video(1, 3, 4, 1), context_frames=1)
    labelled = label_rollout_frames(grid, context_frames=1)
    assert labelled.dtype == np.uint8 and labelled.shape[0] == 3
    assert labelled.shape[2] > grid.shape[-1]  # 6 px is too narrow for a word: padded on the right
    np.testing.assert_array_equal(labelled[:, -grid.shape[-2] :, : grid.shape[-1]], decode_grid(grid))
    with pytest.raises(ValueError, match="context_frames"):
        label_rollout_frames(grid, context_frames=4)


def decode_grid(grid: torch.Tensor) -> np.ndarray:
    return (grid * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_add_image_grid_is_png(writer, tmp_path):
    images = torch.rand(10, 3, 8, 8)
    add_image_grid(writer, "recon/grid", images, global_step=1, nrow=4)
    writer.flush()
    (data,) = read_event_images(tmp_path)["recon/grid"]
    assert data.startswith(PNG_MAGIC)
    png = Image.open(io.BytesIO(data))
    # make_grid: 4 columns x 3 rows of 8x8 images with 2-px padding around each
    assert png.size == (4 * 10 + 2, 3 * 10 + 2)


def test_add_image_grid_rejects_bad_images(writer):
    with pytest.raises(ValueError, match="images"):
        add_image_grid(writer, "recon/grid", torch.rand(10, 8, 8), global_step=1)


def test_add_text_once_is_not_an_image(writer, tmp_path):
    add_text_once(writer, "status/lpips", "disabled: no backbone weights")
    writer.flush()
    assert read_event_images(tmp_path) == {}


def test_add_text_once_writes_once_per_writer_and_text(writer, tmp_path):
    for text in ("on", "on", "off", "off"):
        add_text_once(writer, "status/lpips", text)
    writer.flush()
    written = [
        b"".join(value.tensor.string_val).decode()
        for path in tmp_path.rglob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag.startswith("status/lpips")  # torch's add_text appends "/text_summary"
    ]
    assert written == ["on", "off"]


def test_read_event_images_rejects_missing_dir(tmp_path):
    with pytest.raises(ValueError, match="logdir"):
        read_event_images(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- rollout_grid


def test_rollout_grid_shape_and_rows():
    batch, steps, height, width, border = 3, 5, 4, 6, 1
    truth = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(4))
    model = torch.rand(batch, steps, 3, height, width, generator=torch.Generator().manual_seed(5))
    grid = rollout_grid(truth, model, context_frames=2, border=border)
    cell_h, cell_w = height + 2 * border, width + 2 * border
    assert grid.shape == (steps, 3, 3 * cell_h, batch * cell_w)
    assert grid.dtype == torch.float32
    assert grid.min() >= 0.0 and grid.max() <= 1.0

    b, t = 2, 4
    top, left = border, b * cell_w + border

    def cell(row: int) -> torch.Tensor:
        y = row * cell_h + top
        return grid[t, :, y : y + height, left : left + width]

    torch.testing.assert_close(cell(0), truth[b, t])
    torch.testing.assert_close(cell(1), model[b, t])
    torch.testing.assert_close(cell(2), (truth[b, t] - model[b, t]).abs())


def test_rollout_grid_error_row_known_pixel():
    truth = torch.zeros(1, 2, 3, 2, 2)
    model = torch.zeros(1, 2, 3, 2, 2)
    truth[0, 1, :, 0, 1] = torch.tensor([0.9, 0.2, 0.5])
    model[0, 1, :, 0, 1] = torch.tensor([0.4, 0.7, 0.5])
    grid = rollout_grid(truth, model, context_frames=1, border=0)
    error_pixel = grid[1, :, 2 * 2 + 0, 1]  # error row starts at y = 2 * H
    torch.testing.assert_close(error_pixel, torch.tensor([0.5, 0.5, 0.0]))


def test_rollout_grid_marks_context_and_predicted_steps():
    truth = torch.full((2, 4, 3, 3, 3), 0.5)
    grid = rollout_grid(truth, truth.clone(), context_frames=3, border=1)
    context_colour = torch.tensor(CONTEXT_BORDER_COLOR)
    predicted_colour = torch.tensor(PREDICTED_BORDER_COLOR)
    for t in range(4):
        expected = context_colour if t < 3 else predicted_colour
        # the grid's outer frame and the gaps between cells are all in the step's phase colour
        torch.testing.assert_close(grid[t, :, 0, :], expected[:, None].expand(3, grid.shape[-1]))
        torch.testing.assert_close(grid[t, :, :, 0], expected[:, None].expand(3, grid.shape[-2]))
        torch.testing.assert_close(grid[t, :, 4, 4], expected)  # bottom-left corner of cell (0, 0)
        torch.testing.assert_close(grid[t, :, 1, 1], torch.full((3,), 0.5))  # inside cell (0, 0)


def test_rollout_grid_accepts_uint8_and_clips_model():
    truth = torch.full((1, 2, 3, 2, 2), 255, dtype=torch.uint8)
    model = torch.full((1, 2, 3, 2, 2), 1.5)
    grid = rollout_grid(truth, model, context_frames=0, border=0)
    assert (grid[:, :, 0:4] == 1.0).all()  # truth and clipped model rows
    assert (grid[:, :, 4:6] == 0.0).all()  # no error once clipped


@pytest.mark.parametrize(
    ("truth_shape", "model_shape", "context_frames", "match"),
    [
        ((2, 4, 3, 4, 4), (2, 4, 3, 4, 4), 5, "context_frames"),
        ((2, 4, 3, 4, 4), (2, 4, 3, 4, 4), -1, "context_frames"),
        ((2, 4, 3, 4, 4), (1, 4, 3, 4, 4), 2, "model"),
        ((2, 4, 1, 4, 4), (2, 4, 1, 4, 4), 2, "truth"),
        ((4, 3, 4, 4), (4, 3, 4, 4), 2, "truth"),
    ],
)
def test_rollout_grid_rejects_bad_inputs(truth_shape, model_shape, context_frames, match):
    with pytest.raises(ValueError, match=match):
        rollout_grid(torch.rand(truth_shape), torch.rand(model_shape), context_frames)


# ------------------------------------------------------------------------------------------------------ PSNR


def test_psnr_known_values_and_both_wrappers_agree_with_the_old_formulas():
    from aime_rl.training.perception import psnr as perception_psnr
    from aime_rl.world_model.imagination import psnr_per_step

    target = torch.zeros(2, 3, 3, 4, 4)
    prediction = torch.full_like(target, 0.1)  # MSE 0.01 everywhere -> 20 dB
    torch.testing.assert_close(psnr(prediction, target), torch.tensor(20.0))
    assert perception_psnr(prediction, target) == pytest.approx(20.0)
    torch.testing.assert_close(psnr_per_step(target, prediction), torch.full((3,), 20.0))
    assert psnr(target, target).item() == pytest.approx(100.0)  # MSE floored at 1e-10
    clipped = psnr(torch.full((2, 2), 1.5), torch.ones(2, 2))  # the prediction is clipped to [0, 1]
    assert clipped.item() == pytest.approx(100.0)
    # uint8 is read as [0, 255]: 51 / 255 = 0.2, 0.1 away from the target
    torch.testing.assert_close(
        psnr(torch.full((4,), 51, dtype=torch.uint8), torch.full((4,), 0.1)), torch.tensor(20.0)
    )
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 3), torch.zeros(3, 2))

    # random videos: the same numbers as the two functions gave before they shared one implementation
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 5, 3, 8, 8, generator=g)
    pred = torch.rand(3, 5, 3, 8, 8, generator=g) * 1.2 - 0.1
    old_overall = 10 * torch.log10(1.0 / torch.mean((pred.clamp(0, 1) - truth) ** 2).clamp_min(1e-10))
    assert perception_psnr(pred, truth) == pytest.approx(float(old_overall), rel=1e-6)
    old_per_step = (-10.0 * torch.log10((truth - pred.clamp(0, 1)).square().mean(dim=(2, 3, 4)))).mean(0)
    torch.testing.assert_close(psnr_per_step(truth, pred), old_per_step)
    torch.testing.assert_close(psnr(pred, truth, dim=(2, 3, 4)).mean(0), old_per_step)


def test_rollout_psnr_scalars_are_one_based(writer, tmp_path):
    scalars = add_rollout_psnr(writer, "rollout", torch.tensor([30.0, 20.0]), [25.0, 15.0], global_step=3)
    assert scalars == rollout_psnr_scalars([30.0, 20.0], [25.0, 15.0])
    assert scalars == {
        "psnr/step_1": 30.0,
        "psnr/step_2": 20.0,
        "copy_last_psnr/step_1": 25.0,
        "copy_last_psnr/step_2": 15.0,
        "psnr/mean": 25.0,
        "copy_last_psnr/mean": 20.0,
    }
    writer.flush()
    assert scalar_tags(tmp_path) == {f"rollout/{name}" for name in scalars}
    with pytest.raises(ValueError, match="copy_last_psnr"):
        rollout_psnr_scalars([1.0, 2.0], [1.0])


def scalar_tags(logdir) -> set[str]:
    """Tags of every scalar summary in the event files under ``logdir``."""
    tags = set()
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value") or value.metadata.plugin_data.plugin_name == "scalars":
                    tags.add(value.tag)
    return tags


def scalar_values(logdir) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars" or value.HasField("simple_value"):
                    number = (
                        value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0]
                    )
                    values.setdefault(value.tag, []).append(number)
    return values


# ----------------------------------------------------------------------------- both trainers, one tag scheme


@pytest.fixture(scope="module")
def tiny_catch(tmp_path_factory):
    """A 32×32 Catch replay store and the tiny perception preset saved to disk (untrained: only tags matter)."""
    from aime_rl.perception import CausalPerceiverIO

    from .test_vrnn import collect_catch

    store = collect_catch(tmp_path_factory.mktemp("catch"), episodes=6, size=32)
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("perceiver")
    CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), base_channels=8).save_pretrained(
        model_dir
    )
    return store.directory, model_dir


def tiny_config():
    from aime_rl.training import TrainerConfig

    # sequence_length 4: both trainers observe 2 frames and predict 2 (their default split is half and half)
    return TrainerConfig(
        steps=1,
        batch_size=2,
        sequence_length=4,
        warmup_steps=1,
        log_every=1,
        eval_every=0,  # one evaluation, after the last step
        checkpoint_every=0,
        holdout_fraction=0.25,
    )


@pytest.fixture
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("_one_thread")
def test_perception_and_world_model_trainers_write_the_same_rollout_tags(tiny_catch, tmp_path):
    from aime_rl.perception import CausalPerceiverIO
    from aime_rl.training.perception import train_context_model, train_tokenizer
    from aime_rl.world_model.training import train_world_model

    store_dir, model_dir = tiny_catch
    tokenizer_dir, context_dir, world_model_dir = (
        tmp_path / n for n in ("tokenizer", "context", "world_model")
    )
    perception = CausalPerceiverIO.from_pretrained(model_dir)
    train_tokenizer(perception.tokenizer, store_dir, tiny_config(), tokenizer_dir)
    train_context_model(perception, store_dir, tiny_config(), context_dir)
    perceiver = CausalPerceiverIO.from_pretrained(model_dir).eval()
    train_world_model(store_dir, perceiver, tiny_config(), world_model_dir, dict(SMALL_VRNN), progress=False)

    horizon = 2
    rollout = {
        f"rollout/{name}/step_{k}" for name in ("psnr", "copy_last_psnr") for k in range(1, horizon + 1)
    }
    rollout |= {"rollout/psnr/mean", "rollout/copy_last_psnr/mean"}
    context_tags, world_model_tags = scalar_tags(context_dir), scalar_tags(world_model_dir)
    assert rollout <= context_tags and rollout <= world_model_tags
    # the same rollout names in both runs, nothing else under rollout/ and no 0-based step
    assert {t for t in context_tags if t.startswith("rollout/")} == rollout
    assert {t for t in world_model_tags if t.startswith("rollout/")} == rollout
    assert not any("step_0" in tag or "psnr_step" in tag for tag in context_tags | world_model_tags)
    for logdir in (context_dir, world_model_dir):
        values = scalar_values(logdir)
        for tag in rollout:
            assert len(values[tag]) == 1 and np.isfinite(values[tag][0]), (logdir.name, tag)
        steps = [values[f"rollout/copy_last_psnr/step_{k}"][0] for k in range(1, horizon + 1)]
        assert values["rollout/copy_last_psnr/mean"][0] == pytest.approx(np.mean(steps), rel=1e-5)
        (gif,) = read_event_images(logdir)["rollout/open_loop"]
        frames = decode_gif(gif)
        assert frames.shape[1] > 3 * (32 + 2)  # the labelled GIF: the grid and a header strip
    assert {
        "eval/next_frame_accuracy",
        "eval/next_frame_copy_last_accuracy",
        "eval/next_frame_psnr",
        "eval/next_frame_copy_last_psnr",
    } <= context_tags
    tokenizer_tags = scalar_tags(tokenizer_dir)
    assert "eval/reconstruction_psnr" in tokenizer_tags and "eval/psnr" not in tokenizer_tags


SMALL_VRNN = dict(
    hidden_dim=32, latent_dim=8, embed_dim=32, mlp_dim=64, decoder_channels=16, max_components=6, action_dim=3
)
