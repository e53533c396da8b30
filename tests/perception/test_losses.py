"""PerceptualLoss: both hub-cache paths (weights absent / present), offline, on CPU.

"Present" is faked by saving a randomly initialised torchvision AlexNet state dict at the exact filename
torchvision would cache, in a temporary hub dir; nothing is ever downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from aime_rl.perception import losses
from aime_rl.perception.losses import LPIPSUnavailableWarning, PerceptualLoss, lpips_weights_path

H = W = 32  # alex's minimum is 31


@pytest.fixture(autouse=True)
def _reset_warn_once():
    losses._WARNED_ONCE.clear()
    yield
    losses._WARNED_ONCE.clear()


def _point_hub_at(monkeypatch: pytest.MonkeyPatch, hub_dir: Path) -> None:
    """Make torch.hub.get_dir() return ``hub_dir`` for one test (undone by monkeypatch)."""
    monkeypatch.setenv("TORCH_HOME", str(hub_dir.parent))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    _point_hub_at(monkeypatch, hub)
    return hub


@pytest.fixture(scope="module")
def alexnet_state() -> dict[str, torch.Tensor]:
    """A random (not ImageNet) torchvision AlexNet state dict, the same layout as the real cached file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        return torchvision.models.alexnet(weights=None).state_dict()


@pytest.fixture(scope="module")
def filled_hub_dir(tmp_path_factory: pytest.TempPathFactory, alexnet_state) -> Path:
    hub = tmp_path_factory.mktemp("filled") / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(alexnet_state, hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    return hub


@pytest.fixture
def filled_hub(filled_hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _point_hub_at(monkeypatch, filled_hub_dir)
    return filled_hub_dir


def _images(seed: int, shape=(2, 3, H, W)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _our_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, LPIPSUnavailableWarning)]


# ---------------------------------------------------------------------------------------------- paths


def test_weights_path_follows_hub_dir(empty_hub: Path):
    assert lpips_weights_path("alex") == empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert lpips_weights_path("vgg") == empty_hub / "checkpoints" / "vgg16-397923af.pth"
    assert lpips_weights_path("vgg16") == lpips_weights_path("vgg")
    with pytest.raises(ValueError, match="net must be one of"):
        lpips_weights_path("resnet")


def test_the_weights_files_are_the_ones_torchvision_would_cache(empty_hub: Path):
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    for net, weights in (
        ("alex", AlexNet_Weights),
        ("vgg", VGG16_Weights),
        ("squeeze", SqueezeNet1_1_Weights),
    ):
        filename = weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
        assert lpips_weights_path(net) == empty_hub / "checkpoints" / filename


def test_importing_the_cli_does_not_import_torchvision():
    code = "import sys, aime_rl.cli; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- absent


def test_absent_weights_disable_and_warn_once(empty_hub: Path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = PerceptualLoss("alex")
        second = PerceptualLoss("alex")
    ours = _our_warnings(record)
    assert len(ours) == 1
    message = str(ours[0].message)
    assert str(empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "alexnet-owt-7be5be79.pth" in message and "TORCH_HOME" in message
    for loss in (first, second):
        assert loss.enabled is False
        assert loss.lpips_network is None
        assert loss.status.startswith("LPIPS disabled: backbone weights not found at")
        assert str(lpips_weights_path("alex")) in loss.status


def test_absent_weights_forward_is_zero(empty_hub: Path):
    with pytest.warns(LPIPSUnavailableWarning):
        loss = PerceptualLoss()
    x = _images(0).requires_grad_()
    value = loss(x, _images(1))
    assert value.shape == () and value.item() == 0.0 and value.dtype == x.dtype
    total = (x**2).mean() + value  # the zero joins a loss sum without breaking backward
    total.backward()
    assert x.grad is not None


def test_disabled_by_configuration_does_not_warn(empty_hub: Path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loss = PerceptualLoss(enabled=False)
    assert not _our_warnings(record)
    assert loss.enabled is False and "enabled=False" in loss.status
    assert loss(_images(0), _images(1)).item() == 0.0


def test_unreadable_file_disables_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    hub = tmp_path / "hub"
    _point_hub_at(monkeypatch, hub)
    (hub / "checkpoints").mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(1)}, lpips_weights_path("alex"))  # wrong content
    with pytest.warns(LPIPSUnavailableWarning, match="could not load"):
        loss = PerceptualLoss()
    assert loss.enabled is False
    assert loss.status.startswith("LPIPS disabled: could not load backbone weights from")
    assert loss(_images(0), _images(1)).item() == 0.0


# ---------------------------------------------------------------------------------------------- present


def _build_enabled(hub_dir: Path) -> PerceptualLoss:
    with pytest.MonkeyPatch.context() as monkeypatch, warnings.catch_warnings():
        _point_hub_at(monkeypatch, hub_dir)
        warnings.simplefilter("error", LPIPSUnavailableWarning)
        loss = PerceptualLoss("alex")
        assert loss.weights_path == lpips_weights_path("alex")
        return loss


@pytest.fixture(scope="module")
def shared_loss(filled_hub_dir: Path) -> PerceptualLoss:
    """One enabled loss for the tests that do not change it (building one takes ~0.5 s)."""
    return _build_enabled(filled_hub_dir)


@pytest.fixture
def enabled_loss(filled_hub_dir: Path) -> PerceptualLoss:
    """A fresh enabled loss for tests that change its mode or dtype."""
    return _build_enabled(filled_hub_dir)


def test_present_weights_enable_and_load_from_file(shared_loss: PerceptualLoss, alexnet_state):
    assert shared_loss.enabled is True
    expected_path = shared_loss.weights_path
    assert expected_path.parent.parent.name == "hub" and expected_path.name == "alexnet-owt-7be5be79.pth"
    assert shared_loss.status == f"LPIPS enabled (alex, weights from {expected_path})"
    backbone = shared_loss.lpips_network.net
    loaded = {name: tensor for name, tensor in backbone.state_dict().items()}
    assert len(loaded) == 10  # 5 convs x (weight, bias)
    for name, tensor in loaded.items():
        _slice, index, leaf = name.split(".")
        torch.testing.assert_close(tensor, alexnet_state[f"features.{index}.{leaf}"], rtol=0, atol=0)
    assert all(not p.requires_grad for p in shared_loss.lpips_network.parameters())


def test_present_weights_distances_and_gradient(shared_loss: PerceptualLoss):
    x, y = _images(0), _images(1)
    assert shared_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    x = x.requires_grad_()
    value = shared_loss(x, y)
    assert value.shape == () and value.item() > 0
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in shared_loss.lpips_network.parameters())


def test_video_input_is_flattened(shared_loss: PerceptualLoss):
    x, y = _images(0, (2, 3, 3, H, W)), _images(1, (2, 3, 3, H, W))
    video = shared_loss(x, y)
    frames = shared_loss(x.flatten(0, 1), y.flatten(0, 1))
    torch.testing.assert_close(video, frames)


def test_lpips_net_stays_in_eval_mode(enabled_loss: PerceptualLoss):
    parent = nn.Sequential(nn.Linear(2, 2), enabled_loss)
    parent.train()
    assert enabled_loss.training and not enabled_loss.lpips_network.training
    x, y = _images(0), _images(1)
    assert enabled_loss(x, y).item() == enabled_loss(x, y).item()  # lpips' dropout is off


def test_to_moves_the_unregistered_net(enabled_loss: PerceptualLoss):
    enabled_loss.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in enabled_loss.lpips_network.parameters())
    assert enabled_loss(_images(0).double(), _images(1).double()).dtype == torch.float64


def test_parent_state_dict_has_no_lpips_tensors(shared_loss: PerceptualLoss):
    class Tokenizer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = nn.Conv2d(3, 3, 1)
            self.perceptual = shared_loss

    parent = Tokenizer()
    assert set(parent.state_dict()) == {"decoder.weight", "decoder.bias"}
    assert sum(p.numel() for p in parent.parameters()) == 3 * 3 + 3
    parent.load_state_dict(Tokenizer().state_dict())  # strict round-trip works


def test_construction_leaves_global_rng_alone(filled_hub: Path):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    PerceptualLoss()
    torch.testing.assert_close(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "match"),
    [
        ((2, 1, H, W), (2, 1, H, W), "x must have 3 channels"),
        ((2, 3, H, W), (2, 3, H, W + 1), "x and y must have the same shape"),
        ((2, 3, H, W), (1, 2, 3, H, W), "x and y must have the same shape"),
        ((3, H, W), (3, H, W), r"x must be \[N, 3, H, W\]"),
        ((2, 3, 16, 16), (2, 3, 16, 16), "too small"),
        ((0, 3, H, W), (0, 3, H, W), "x is empty"),
    ],
)
@pytest.mark.parametrize("enabled", [False, True])
def test_bad_shapes_raise_value_error(shared_loss: PerceptualLoss, enabled, x_shape, y_shape, match):
    loss = shared_loss if enabled else PerceptualLoss(enabled=False)
    with pytest.raises(ValueError, match=match):
        loss(torch.rand(x_shape), torch.rand(y_shape))


def test_bad_dtype_and_channels_of_y_raise(empty_hub: Path):
    loss = PerceptualLoss(enabled=False)
    with pytest.raises(ValueError, match="x must be a float tensor"):
        loss(torch.zeros(1, 3, H, W, dtype=torch.uint8), torch.rand(1, 3, H, W))
    with pytest.raises(ValueError, match="y must have 3 channels"):
        loss(torch.rand(1, 3, H, W), torch.rand(1, 4, H, W))
