"""``next_frame_samples``: the next-frame terms decode k of each clip's earlier frames per training step.

The next-frame and context-prediction terms decode a whole frame of token queries from every earlier frame of a
clip; on an Atari frame those decodes are a third of a training step. With k samples each clip contributes k of its
frames, drawn again at every step and for every clip. In eval mode, and with k at least the number of frames, every
frame is decoded, as without the setting.
"""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import load_without_predictor_key, tiny

SPLIT = 4  # context frames of a 6-frame clip: the next-frame terms decode from frames 1, 2 and 3


def decoded_rows(predictor, clip) -> list[int]:
    """The batch size of every decode (``predict_logits``) of one forward pass: the main decode first, then the
    next-frame term's, then the context-prediction term's."""
    rows = []
    decode = predictor.predict_logits

    def counting(memory, ids, last_tokens):
        rows.append(memory.shape[0])
        return decode(memory, ids, last_tokens)

    predictor.predict_logits = counting
    try:
        predictor(clip[:, :6], SPLIT)
    finally:
        del predictor.predict_logits
    return rows


def test_training_decodes_k_frames_of_each_clip(clip):
    batch = clip.shape[0]
    full = decoded_rows(tiny(context_prediction_weight=1.0).train().predictor, clip)
    sampled = decoded_rows(tiny(context_prediction_weight=1.0, next_frame_samples=1).train().predictor, clip)
    assert full == [batch, 3 * batch, 3 * batch]
    assert sampled == [batch, batch, batch]


def test_evaluation_decodes_every_frame(clip):
    batch = clip.shape[0]
    rows = decoded_rows(tiny(context_prediction_weight=1.0, next_frame_samples=1).eval().predictor, clip)
    assert rows == [batch, 3 * batch, 3 * batch]


def test_k_at_least_the_number_of_frames_is_the_full_term(clip):
    torch.manual_seed(0)
    full = tiny().train()
    sampled = tiny(next_frame_samples=3).train()
    sampled.load_state_dict(full.state_dict())
    torch.manual_seed(1)
    expected = full.predictor(clip[:, :6], SPLIT).next_frame_loss
    torch.manual_seed(1)
    torch.testing.assert_close(sampled.predictor(clip[:, :6], SPLIT).next_frame_loss, expected)


def full_and_single_frame_terms(predictor, clip, term: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``term`` of one eval-mode pass (every query masked, no dropout) decoded from every frame, and the mean of the
    same term decoded from frame j alone, j = 1, 2, 3."""
    with torch.no_grad():
        full = predictor(clip[:, :6], SPLIT)[term]
        single = []
        for start in (1, 2, 3):
            predictor._next_frame_starts = lambda batch, num, device, j=start: torch.full((batch, 1), j)
            single.append(predictor(clip[:, :6], SPLIT)[term])
        del predictor._next_frame_starts
    return full, torch.stack(single).mean()


def test_the_term_on_each_single_frame_averages_to_the_full_term(clip):
    """Decoding from frame j alone, for j = 1, 2, 3, and averaging gives the term over all three frames: the
    sampled frames' memories, targets and copied tokens are gathered from the same frame."""
    predictor = tiny(change_weight=0.0, next_frame_samples=1).predictor
    full, single = full_and_single_frame_terms(predictor, clip, "next_frame_loss")
    torch.testing.assert_close(single, full)


def test_the_context_term_two_steps_ahead_from_each_single_frame_averages_to_the_full_term(clip):
    """The same with the context-prediction term asked two token steps ahead: each sampled frame's targets are
    the two steps after it."""
    model = tiny(
        change_weight=0.0, context_prediction_weight=1.0, context_prediction_horizon=2, next_frame_samples=1
    )
    full, single = full_and_single_frame_terms(model.predictor, clip, "context_prediction_loss")
    torch.testing.assert_close(single, full)


def test_each_clip_is_decoded_from_its_own_frame(clip):
    """Clip 0 from frame 1 and clip 1 from frame 3 in one batch: the term is the mean of each clip's term alone."""
    model = tiny(change_weight=0.0, next_frame_samples=1)
    predictor = model.predictor

    def term(clips, starts):
        predictor._next_frame_starts = lambda batch, num, device: torch.tensor(starts).view(batch, 1)
        return predictor(clips[:, :6], SPLIT).next_frame_loss

    with torch.no_grad():
        together = term(clip[:2], [1, 3])
        alone = torch.stack([term(clip[:1], [1]), term(clip[1:2], [3])])
    del predictor._next_frame_starts
    torch.testing.assert_close(together, alone.mean())


def test_each_clip_draws_its_own_frames():
    predictor = tiny(next_frame_samples=2).train().predictor
    torch.manual_seed(0)
    starts = predictor._next_frame_starts(64, 4, torch.device("cpu"))
    assert starts.shape == (64, 2)
    assert all(len(set(row.tolist())) == 2 for row in starts)  # without replacement
    assert set(starts.flatten().tolist()) == {1, 2, 3, 4}
    assert len({tuple(row.tolist()) for row in starts}) > 1


@pytest.mark.parametrize("samples", [0, -1, 1.5, True])
def test_a_number_of_samples_that_is_not_a_positive_int_is_refused(samples):
    with pytest.raises(ValueError, match="next_frame_samples"):
        tiny(next_frame_samples=samples)


def test_a_config_written_before_the_setting_decodes_every_frame(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "next_frame_samples")
    assert model.config.predictor.next_frame_samples is None
