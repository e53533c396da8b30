"""``action_conditioning``: the next-frame decoder is told the actions that lead to each frame it predicts.

``actions[:, t]`` leads from frame t to frame t + 1 (the replay's convention). Each predicted step's queries get the
sum of the embeddings of the actions that lead to it; the context, which reads frames alone, does not change, and
a prediction told no actions is the unconditioned model's.
"""

from __future__ import annotations

import pytest
import torch

from tests.perception.helpers import load_without_predictor_key, tiny

CONTEXT_FRAMES = 4
NUM_ACTIONS = 3


def conditioned(**settings):
    """A tiny model with ``action_conditioning`` (and ``settings``) and otherwise the weights of ``tiny(**settings)``
    at seed 0, and that model."""
    torch.manual_seed(0)
    plain = tiny(**settings)
    model = tiny(action_conditioning=True, num_actions=NUM_ACTIONS, **settings)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["predictor.action_embedding.weight"] and not unexpected
    return model, plain


def some_actions(batch: int = 2, frames: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, NUM_ACTIONS, (batch, frames), generator=torch.Generator().manual_seed(seed))


def changed_at(actions: torch.Tensor, t: int) -> torch.Tensor:
    other = actions.clone()
    other[:, t] = (other[:, t] + 1) % NUM_ACTIONS
    return other


def logits(model, clip, actions=None) -> torch.Tensor:
    with torch.no_grad():
        return model.predictor(clip[:, :6], CONTEXT_FRAMES, actions=actions).logits  # [B, 2, h, w, G, K]


def test_the_actions_change_the_predicted_frames(clip):
    model, _ = conditioned()
    actions = some_actions()
    assert not torch.allclose(logits(model, clip, actions), logits(model, clip, changed_at(actions, 3)))


def test_the_predicted_frames_are_told_the_actions_that_lead_to_them(clip):
    model, _ = conditioned()
    actions = some_actions()
    base = logits(model, clip, actions)
    # frames 4 and 5 are predicted from frame 3: actions 3 and 4 lead to them; action 5 leads past the clip, and
    # actions 0 … 2 lead to frames the model has seen (the decoder's queries of the two frames see each other, as
    # its masked tokens do)
    for t in (0, 1, 2, 5):
        assert torch.equal(base, logits(model, clip, changed_at(actions, t)))
    for t in (3, 4):
        assert not torch.allclose(base, logits(model, clip, changed_at(actions, t)))


def test_told_no_actions_it_predicts_as_the_unconditioned_model(clip):
    model, plain = conditioned()
    assert torch.equal(logits(model, clip), logits(plain, clip))


def test_the_context_reads_frames_alone(clip):
    model, plain = conditioned()
    with torch.no_grad():
        assert torch.equal(model.extract_context(clip), plain.extract_context(clip))


def test_every_frame_predicting_term_is_told_the_actions(clip):
    model, _ = conditioned(context_prediction_weight=1.0)
    model.train()
    actions = some_actions(frames=12)
    torch.manual_seed(5)
    out = model.predictor(clip, CONTEXT_FRAMES, actions=actions)
    terms = ("token_loss", "next_frame_loss", "context_prediction_loss")
    first = {name: out[name].item() for name in terms}
    torch.manual_seed(5)  # the same masks: only the actions into frames 1 and 2 differ
    out = model.predictor(clip, CONTEXT_FRAMES, actions=changed_at(changed_at(actions, 0), 1))
    assert first["token_loss"] == out["token_loss"].item()  # predicts frames 4 … 11 from frame 3
    assert first["next_frame_loss"] != out["next_frame_loss"].item()
    assert first["context_prediction_loss"] != out["context_prediction_loss"].item()


def test_the_action_embeddings_are_learned_and_no_action_stays_zero(clip):
    model, _ = conditioned()
    model.train().predictor(clip[:, :6], CONTEXT_FRAMES, actions=some_actions()).loss.backward()
    grad = model.predictor.action_embedding.weight.grad
    assert grad[:NUM_ACTIONS].abs().sum() > 0
    assert torch.equal(grad[NUM_ACTIONS], torch.zeros_like(grad[NUM_ACTIONS]))
    assert torch.equal(model.predictor.action_embedding.weight[NUM_ACTIONS], torch.zeros(grad.shape[1]))


def test_cached_tokens_and_frames_give_the_same_losses(clip):
    model, _ = conditioned()
    actions = some_actions()
    with torch.no_grad():
        from_frames = model.predictor(clip[:, :6], CONTEXT_FRAMES, actions=actions)
        tokens = model.predictor.tokenize(clip[:, :6])
        from_tokens = model.predictor(None, CONTEXT_FRAMES, tokens=tokens, actions=actions)
    assert torch.allclose(from_frames.loss, from_tokens.loss)


def test_without_it_there_is_no_embedding():
    assert tiny().predictor.action_embedding is None


def test_it_needs_the_number_of_actions():
    with pytest.raises(ValueError, match="num_actions"):
        tiny(action_conditioning=True)


def test_it_needs_one_token_step_per_frame():
    with pytest.raises(ValueError, match="one token step per frame"):
        tiny(action_conditioning=True, num_actions=NUM_ACTIONS, temporal_downsample=True)


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (torch.zeros(2, 5, dtype=torch.long), r"\[B, T\] = \[2, 6\]"),
        (torch.zeros(2, 6), "integer action ids"),
        (torch.full((2, 6), NUM_ACTIONS), r"in \[0, 3\)"),
        (torch.full((2, 6), -1), r"in \[0, 3\)"),
    ],
)
def test_bad_actions_are_refused_by_name(clip, actions, message):
    model, _ = conditioned()
    with pytest.raises(ValueError, match=message):
        model.predictor(clip[:, :6], CONTEXT_FRAMES, actions=actions)


def test_an_unconditioned_model_refuses_actions(clip):
    with pytest.raises(ValueError, match="without action_conditioning"):
        tiny().predictor(clip[:, :6], CONTEXT_FRAMES, actions=some_actions())


def test_the_setting_and_the_embeddings_survive_a_checkpoint(tmp_path):
    model, _ = conditioned()
    with torch.no_grad():
        model.predictor.action_embedding.weight[0].fill_(0.5)
    model.save_pretrained(tmp_path / "model")
    loaded = type(model).from_pretrained(tmp_path / "model")
    assert loaded.config.predictor.action_conditioning and loaded.config.predictor.num_actions == NUM_ACTIONS
    assert torch.equal(loaded.predictor.action_embedding.weight, model.predictor.action_embedding.weight)


def test_a_config_written_before_it_loads_without_it(tmp_path):
    model = load_without_predictor_key(tmp_path / "model", "action_conditioning")
    assert not model.config.predictor.action_conditioning and model.predictor.action_embedding is None
