"""GIF summaries, rollout videos and image grids land in the event file and decode to what was written; the tag
scheme of ``aime_rl.utils.tensorboard`` is what both the perception trainer and the world-model trainer write."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch.utils.tensorboard import SummaryWriter

from aime_rl.utils.tensorboard import (
    add_gif,
    add_image_grid,
    add_rollout_gif,
    add_rollout_psnr,
    add_text_once,
    label_rollout_frames,
    read_event_images,
    rollout_grid,
    rollout_psnr_scalars,
)
from tests.helpers import collect_catch
from tests.utils.helpers import decode_gif, distinct_colour_frames, flat_cell_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def writer(tmp_path):
    summary_writer = SummaryWriter(log_dir=str(tmp_path))
    yield summary_writer
    summary_writer.close()


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
