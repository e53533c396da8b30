"""``embeddings_from_codes``: the context model's code embeddings start at a random projection of the trained
tokenizer's code vectors, so codes of similar patches start near each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aime_rl.pipeline import RunConfig, build_model
from tests.perception.helpers import load_without_predictor_key, tiny


def cosine_matrix(rows: torch.Tensor) -> torch.Tensor:
    """``[K, d]`` → ``[K, K]`` cosine similarities."""
    unit = F.normalize(rows, dim=-1)
    return unit @ unit.T


def test_embeddings_follow_the_geometry_of_the_code_vectors():
    torch.manual_seed(0)
    model = tiny(num_latent_channels=256)  # wide rows: a random projection then keeps angles closely
    model.init_embeddings_from_codebook()
    codes = model.tokenizer.codebook[0]
    rows = model.predictor.input_adapter.embeddings[0, :-1].detach()
    error = (cosine_matrix(rows) - cosine_matrix(codes)).abs().max()
    assert error < 0.35, error  # independent random rows are unrelated to the codes (see the next test)


def test_independent_random_rows_do_not_follow_the_code_vectors():
    torch.manual_seed(0)
    model = tiny(num_latent_channels=256)
    codes = model.tokenizer.codebook[0]
    rows = model.predictor.input_adapter.embeddings[0, :-1].detach()
    assert (cosine_matrix(rows) - cosine_matrix(codes)).abs().max() > 0.5


def test_near_identical_codes_get_near_identical_embeddings():
    torch.manual_seed(0)
    model = tiny()
    with torch.no_grad():
        model.tokenizer.codebook[1, 3] = model.tokenizer.codebook[1, 7] * 2.0 + 1e-4  # same direction
    model.init_embeddings_from_codebook()
    table = model.predictor.input_adapter.embeddings.detach()
    assert torch.allclose(table[1, 3], table[1, 7], atol=1e-4)


def test_the_mask_row_is_kept_and_the_scale_is_the_usual_one():
    torch.manual_seed(0)
    model = tiny(num_latent_channels=256)
    before = model.predictor.input_adapter.embeddings.detach().clone()
    model.init_embeddings_from_codebook()
    after = model.predictor.input_adapter.embeddings.detach()
    assert torch.equal(after[:, -1], before[:, -1])  # [MASK]
    assert not torch.equal(after[:, :-1], before[:, :-1])
    assert after[:, :-1].std().item() == pytest.approx(0.02, rel=0.15)


def test_the_embeddings_stay_trainable():
    torch.manual_seed(0)
    model = tiny()
    model.init_embeddings_from_codebook()
    assert model.predictor.input_adapter.embeddings.requires_grad


def test_a_codebook_of_the_wrong_shape_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="codebook must be"):
        model.predictor.input_adapter.init_from_codebook(torch.zeros(1, 5, 4))


def build_config(tmp_path, seed: int = 0) -> RunConfig:
    return RunConfig(
        name="codes", runs_dir=str(tmp_path), preset="tiny", frame_size=32, sequence_length=4, seed=seed
    )


@pytest.mark.parametrize("embeddings_from_codes", [False, True])
def test_the_pipeline_starts_from_the_codes_only_when_asked(tmp_path, monkeypatch, embeddings_from_codes):
    from aime_rl.perception import presets

    tiny_preset = {**presets.PRESETS["tiny"]}
    tiny_preset["predictor"] = {**tiny_preset["predictor"], "embeddings_from_codes": embeddings_from_codes}
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny_preset)
    tokenizer = build_model(build_config(tmp_path, seed=1)).tokenizer
    model = build_model(build_config(tmp_path), tokenizer)
    rows = model.predictor.input_adapter.embeddings[0, :-1].detach()
    # rows drawn from the code vectors have rank ≤ the code vectors' size; independent rows have full rank
    code_size = tokenizer.codebook.shape[-1]
    assert (torch.linalg.matrix_rank(rows) <= code_size) == embeddings_from_codes


def test_the_pipeline_init_is_deterministic(tmp_path, monkeypatch):
    from aime_rl.perception import presets

    tiny_preset = {**presets.PRESETS["tiny"]}
    tiny_preset["predictor"] = {**tiny_preset["predictor"], "embeddings_from_codes": True}
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny_preset)
    tokenizer = build_model(build_config(tmp_path, seed=1)).tokenizer
    first = build_model(build_config(tmp_path), tokenizer).predictor.input_adapter.embeddings
    second = build_model(build_config(tmp_path), tokenizer).predictor.input_adapter.embeddings
    assert torch.equal(first, second)


def test_a_checkpoint_written_before_the_option_loads_without_it(tmp_path):
    loaded = load_without_predictor_key(tmp_path / "model", "embeddings_from_codes")
    assert loaded.config.predictor.embeddings_from_codes is False
