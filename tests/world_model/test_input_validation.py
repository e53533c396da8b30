"""The world model refuses silently wrong inputs: NaN/inf actions in the belief filter, hand-edited VRNN configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aime_rl.perception import CausalPerceiverIO
from aime_rl.world_model.env import VRNNFilter
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import copy_dir, edit_config

VRNN_OPTIONS = dict(
    hidden_dim=16, latent_dim=4, embed_dim=16, mlp_dim=32, decoder_channels=8, max_components=3
)


@pytest.fixture(scope="module")
def continuous_vrnn() -> VRNN:
    torch.manual_seed(0)
    perceiver = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), base_channels=8).eval()
    return VRNN(perceiver, 2, discrete=False, **VRNN_OPTIONS).eval()


def test_nan_action_in_the_belief_filter_raises_and_leaves_the_state_alone(continuous_vrnn):
    vrnn = continuous_vrnn
    context, embedding = torch.randn(2, vrnn.context_dim), torch.randn(2, vrnn.config.embed_dim)
    filt = VRNNFilter(vrnn, 2)
    filt.step(context, embedding)
    h = filt.state.h.clone()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"prev_action contains NaN or inf values in rows \[0\]"):
            filt.step(context, embedding, torch.tensor([[0.5, bad], [0.1, 0.2]]))
    assert torch.equal(filt.state.h, h)
    with pytest.raises(ValueError, match="context contains NaN"):
        filt.step(torch.full_like(context, float("nan")), embedding, torch.zeros(2, 2))
    belief = filt.step(context, embedding, torch.zeros(2, 2))
    assert torch.isfinite(belief).all()
    filt.reset(torch.tensor([False, True]))  # a row that starts now ignores its (stale) action
    assert torch.isfinite(filt.step(context, embedding, torch.tensor([[0.1, 0.2], [float("nan")] * 2]))).all()


@pytest.fixture(scope="module")
def vrnn_dir(tmp_path_factory, continuous_vrnn) -> Path:
    directory = tmp_path_factory.mktemp("vrnn") / "wm"
    continuous_vrnn.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("action_dim"), "missing key 'action_dim'"),
        (lambda c: c.update(hidden_dim="16"), "key 'hidden_dim' must be int"),
        (lambda c: c.update(extra=1), "unknown key 'extra'"),
        (lambda c: c.update(kl_balance="0.8"), "key 'kl_balance' must be float or null"),
        (lambda c: c.update(mlp_dim=10**6), r"too large to build.*mlp_dim"),
        (lambda c: c.update(hidden_dim=0), "hidden_dim must be an integer >= 1"),
    ],
)
def test_hand_edited_vrnn_configs_raise_value_error_naming_the_key(
    vrnn_dir, continuous_vrnn, tmp_path, edit, match
):
    directory = copy_dir(vrnn_dir, tmp_path)
    edit_config(directory, edit)
    with pytest.raises(ValueError, match=match):
        VRNN.from_pretrained(directory, continuous_vrnn.perceiver)


def test_the_saved_vrnn_still_loads(vrnn_dir, continuous_vrnn):
    loaded = VRNN.from_pretrained(vrnn_dir, continuous_vrnn.perceiver)
    assert loaded.config == continuous_vrnn.config
