"""``select(rows)`` of the streaming states: an independent stream over some rows of a batched one.

``select(rows).step(frames[rows])`` must give what the full stream's ``step(frames)`` gives in those rows (tokens
exactly, contexts and beliefs within 1e-5), also after a mid-stream reset of one row, with a window, with a
timescale summary, with a condition and with temporal downsampling (rows then emit token steps at different
frames); stepping the selection must leave the full stream's next outputs unchanged. Tiny models, one thread.
"""

from __future__ import annotations

import pytest
import torch

from aime_rl.data import moving_sprites
from aime_rl.perception import CausalPerceiverIO
from aime_rl.perception.modules.conv import StreamCache
from aime_rl.perception.modules.kv_cache import WindowKVCache
from aime_rl.world_model import VRNN, VRNNFilter
from tests.helpers import SMALL

ATOL = 1e-5
BATCH = 4
ROWS = torch.tensor([True, False, True, True])  # row 2 is reset mid-stream
RESET_ROW = torch.tensor([False, False, True, False])


def tiny(**overrides) -> CausalPerceiverIO:
    torch.manual_seed(0)
    return CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 32, 32), **overrides).eval()


@pytest.fixture(scope="module")
def model() -> CausalPerceiverIO:
    return tiny()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """Moving sprites ``[BATCH, 14, 3, 32, 32]`` in [0, 1]."""
    return moving_sprites(BATCH, 14, 32, generator=torch.Generator().manual_seed(3))


def warmed_up(stream, clip: torch.Tensor, steps: int = 5, reset_at: int = 3):
    """``stream`` after ``steps`` frames of ``clip``, with row 2 restarted before frame ``reset_at``."""
    for t in range(steps):
        if t == reset_at:
            stream.reset(RESET_ROW)
        stream.step(clip[:, t])
    return stream


def assert_selection_follows(
    stream, selection, clip: torch.Tensor, rows: torch.Tensor, start: int = 5
) -> list:
    """Step both on the rest of ``clip``; the selection equals the stream's rows. Returns the rows' emitted flags."""
    emitted = []
    for t in range(start, clip.shape[1]):
        full = stream.step(clip[:, t])
        part = selection.step(clip[rows, t])
        assert part.shape == (selection.batch_size, full.shape[1])
        assert torch.equal(selection.last_tokens, stream.last_tokens[rows])
        torch.testing.assert_close(part, full[rows], rtol=0, atol=ATOL)
        emitted.append(stream.tokens.last_emitted.clone())
    return emitted


@pytest.mark.parametrize("window", [4, None])
@pytest.mark.parametrize("timescale", ["fast", "medium"])
def test_selection_steps_like_the_full_stream(model, clip, window, timescale):
    with torch.inference_mode():
        stream = warmed_up(model.stream(BATCH, window=window, timescale=timescale), clip)
        selection = stream.select(ROWS)
        assert selection.batch_size == 3 and torch.equal(selection.last_tokens, stream.last_tokens[ROWS])
        assert_selection_follows(stream, selection, clip, ROWS)


def test_integer_indices_reorder_and_repeat_rows(model, clip):
    rows = torch.tensor([3, 0, 3])
    with torch.inference_mode():
        stream = warmed_up(model.stream(BATCH, window=4), clip)
        assert_selection_follows(stream, stream.select(rows), clip, rows)


def test_temporal_downsampling_rows_emit_at_different_frames(clip):
    model = tiny(temporal_downsample=True)
    with torch.inference_mode():
        stream = warmed_up(model.stream(BATCH, window=4), clip)  # the reset before an odd frame shifts row 2
        emitted = assert_selection_follows(stream, stream.select(ROWS), clip, ROWS)
    assert any(flags.any() and not flags.all() for flags in emitted)  # last_emitted differs per row


def test_condition_is_selected(clip):
    model = tiny(num_condition_channels=6)
    condition = torch.randn(BATCH, 6)
    with torch.inference_mode():
        stream = warmed_up(model.stream(BATCH, window=4, condition=condition), clip)
        selection = stream.select(ROWS)
        assert selection.condition.shape == (3, model.context_dim)
        assert_selection_follows(stream, selection, clip, ROWS)


def test_selection_of_a_fresh_stream(model, clip):
    with torch.inference_mode():
        stream = model.stream(BATCH, window=4)
        selection = stream.select(torch.tensor([1]))
        assert selection.last_tokens is None
        assert_selection_follows(stream, selection, clip, torch.tensor([1]), start=0)


def test_stepping_the_selection_leaves_the_stream_unchanged(model, clip):
    other = moving_sprites(BATCH, 6, 32, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        stream = warmed_up(model.stream(BATCH, window=4, timescale="medium"), clip)
        twin = warmed_up(model.stream(BATCH, window=4, timescale="medium"), clip)
        selection = stream.select(ROWS)
        for t in range(other.shape[1]):
            selection.step(other[ROWS, t])
            if t == 2:
                selection.reset(torch.tensor([True, False, True]))
        for t in range(5, clip.shape[1]):
            assert torch.equal(stream.step(clip[:, t]), twin.step(clip[:, t]))
            assert torch.equal(stream.last_tokens, twin.last_tokens)


@pytest.mark.parametrize(
    "rows",
    [
        torch.zeros(BATCH, dtype=torch.bool),
        torch.tensor([], dtype=torch.long),
        torch.tensor([0, BATCH]),
        torch.tensor([-1]),
        torch.ones(BATCH + 1, dtype=torch.bool),
        torch.tensor([0.0, 1.0]),
        torch.tensor([[0, 1]]),
    ],
)
def test_bad_rows_raise_value_error_naming_rows(model, vrnn, clip, rows):
    stream = warmed_up(model.stream(BATCH, window=4), clip, steps=2)
    belief_filter = VRNNFilter(vrnn, BATCH)
    for target in (stream, stream.tokens, stream.tokens.cache, stream._token_cache, belief_filter):
        with pytest.raises(ValueError, match="rows"):
            target.select(rows)


# -- the parts ------------------------------------------------------------------------------------------------------


def test_tokenizer_stream_selection_gives_the_same_tokens(model, clip):
    with torch.inference_mode():
        stream = warmed_up(model.tokenizer.stream(BATCH), clip)
        selection = stream.select(ROWS)
        for t in range(5, clip.shape[1]):
            assert torch.equal(selection.step(clip[ROWS, t]), stream.step(clip[:, t])[ROWS])
            assert torch.equal(selection.last_emitted, stream.last_emitted[ROWS])


def test_stream_cache_selection_copies_every_entry():
    cache = StreamCache(3)
    cache.buffers["conv"] = torch.randn(3, 2, 2, 4, 4)
    cache.phase["conv"] = torch.tensor([1, 2, 3])
    cache.started["conv"] = torch.tensor([True, False, True])
    selected = cache.select(torch.tensor([2, 0]))
    assert selected.batch_size == 2 and selected.device == cache.device
    assert torch.equal(selected.buffers["conv"], cache.buffers["conv"][[2, 0]])
    assert selected.phase["conv"].tolist() == [3, 1] and selected.started["conv"].tolist() == [True, True]
    selected.reset(torch.tensor([True, True]))
    selected.buffers["conv"].zero_()
    assert cache.phase["conv"].tolist() == [1, 2, 3] and cache.started["conv"].tolist() == [True, False, True]
    assert cache.buffers["conv"].abs().sum() > 0


def test_window_kv_cache_selection_keeps_prefix_clock_and_slots():
    prefix = (torch.randn(2, 1, 4), torch.randn(2, 1, 4))
    cache = WindowKVCache(3, 2, 4, tokens_per_step=2, window=3, prefix=prefix)
    for step in range(4):
        cache.advance()
        rows = torch.tensor([True, step % 2 == 0, True])
        cache.write(torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4), rows)
    cache.reset(torch.tensor([False, False, True]))
    selected = cache.select(torch.tensor([False, True, True]))
    assert selected.prefix_length == 1 and selected.num_slots == cache.num_slots
    for name in ("keys", "values", "age", "valid", "next_slot", "clock"):
        assert torch.equal(getattr(selected, name), getattr(cache, name)[1:])
    assert torch.equal(selected.visible(), cache.visible()[1:])
    selected.advance()
    selected.write(torch.randn(2, 2, 2, 4), torch.randn(2, 2, 2, 4), torch.tensor([True, True]))
    assert cache.clock.tolist() == [3, 3, -1]  # the original did not move


# -- the belief filter ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vrnn() -> VRNN:
    perceiver = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), base_channels=8).eval()
    torch.manual_seed(1)
    return VRNN(perceiver, 3, discrete=True, **SMALL).eval()


def filter_inputs(vrnn: VRNN, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contexts ``[B, T, D]``, uint8 frames ``[B, T, 3, 64, 64]`` and action ids ``[B, T]``."""
    g = torch.Generator().manual_seed(seed)
    contexts = torch.randn(BATCH, steps, vrnn.context_dim, generator=g)
    frames = torch.randint(0, 256, (BATCH, steps, 3, 64, 64), dtype=torch.uint8, generator=g)
    return contexts, frames, torch.randint(0, 3, (BATCH, steps), generator=g)


def warmed_up_filter(vrnn: VRNN, contexts, frames, actions, steps: int = 4) -> VRNNFilter:
    """A filter that tokenizes the frames itself, after ``steps`` steps with row 2 restarted before step 2."""
    belief_filter = VRNNFilter(vrnn, BATCH)
    for t in range(steps):
        if t == 2:
            belief_filter.reset(RESET_ROW)
        belief_filter.step(contexts[:, t], frames[:, t], actions[:, t - 1] if t else None)
    return belief_filter


def test_filter_selection_gives_the_same_beliefs(vrnn):
    contexts, frames, actions = filter_inputs(vrnn, 7, seed=4)
    with torch.inference_mode():
        full = warmed_up_filter(vrnn, contexts, frames, actions)
        selection = full.select(ROWS)
        assert selection.batch_size == 3 and selection.state.h.shape == (3, vrnn.config.hidden_dim)
        for t in range(4, 7):
            expected = full.step(contexts[:, t], frames[:, t], actions[:, t - 1])[ROWS]
            got = selection.step(contexts[ROWS, t], frames[ROWS, t], actions[ROWS, t - 1])
            torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_filter_selection_right_after_a_reset(vrnn):
    """A restarted row in the selection starts its episode: its previous action is ignored there too."""
    contexts, frames, actions = filter_inputs(vrnn, 6, seed=5)
    with torch.inference_mode():
        full = warmed_up_filter(vrnn, contexts, frames, actions)
        full.reset(RESET_ROW)
        selection = full.select(torch.tensor([2, 1]))
        assert selection.started.tolist() == [False, True]
        expected = full.step(contexts[:, 4], frames[:, 4], actions[:, 3])[[2, 1]]
        got = selection.step(contexts[[2, 1], 4], frames[[2, 1], 4], actions[[2, 1], 3])
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_stepping_the_filter_selection_leaves_the_filter_unchanged(vrnn):
    contexts, frames, actions = filter_inputs(vrnn, 7, seed=6)
    other_contexts, other_frames, other_actions = filter_inputs(vrnn, 3, seed=7)
    with torch.inference_mode():
        full = warmed_up_filter(vrnn, contexts, frames, actions)
        twin = warmed_up_filter(vrnn, contexts, frames, actions)
        selection = full.select(torch.tensor([0, 2]))
        for t in range(3):
            selection.step(other_contexts[:2, t], other_frames[:2, t], other_actions[:2, t])
        selection.reset(torch.tensor([True, False]))
        for t in range(4, 7):
            got = full.step(contexts[:, t], frames[:, t], actions[:, t - 1])
            assert torch.equal(got, twin.step(contexts[:, t], frames[:, t], actions[:, t - 1]))
