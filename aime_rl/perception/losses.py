"""Perceptual (LPIPS) loss for the VQ tokenizer and the token predictor.

The ``lpips`` package ships its small linear calibration layers, but its AlexNet / VGG / SqueezeNet *backbone*
comes from torchvision, which would download it into the torch hub cache. Downloads are impossible in offline
training, so :class:`PerceptualLoss` never lets torchvision download anything:

* backbone file present in ``torch.hub.get_dir()/checkpoints/`` → the LPIPS net is built with a throw-away
  random backbone (``pnet_rand=True``) and the cached ImageNet weights are loaded into it from that file
  (``torch.load(..., weights_only=True)``);
* file absent (or unreadable) → a :class:`LPIPSUnavailableWarning` is emitted once per file and process, the
  module is *disabled* and returns a zero loss. It never silently falls back to a random backbone.

``.status`` is a one-line, human-readable description of which of the two happened; trainers should log it
(text log and TensorBoard).

With ``lazy=True`` (what the tokenizer uses) nothing of this happens at construction: the hub cache is looked up,
and the warning emitted, the first time ``enabled``, ``status``, ``lpips_network`` or ``forward`` is used — that
is, where the perceptual term is computed in training. Building or loading a model for inference never warns.

The LPIPS network is frozen, always in eval mode, and deliberately *not* a registered submodule: it does not
appear in ``parameters()`` or in a parent's ``state_dict()`` (checkpoints stay free of ~10 MB of backbone),
while ``.to()`` / ``.cuda()`` / ``.double()`` still move it (see :meth:`PerceptualLoss._apply`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .modules.temporal import UNCHANGED, motion_marks

__all__ = ["LPIPSUnavailableWarning", "PerceptualLoss", "lpips_weights_path"]

logger = logging.getLogger(__name__)


class LPIPSUnavailableWarning(UserWarning):
    """The LPIPS backbone weights could not be loaded; the perceptual term is disabled (zero)."""


@dataclass(frozen=True)
class _Backbone:
    """What we need to know about one LPIPS backbone."""

    url: str  # where torchvision would download it from; its basename is the hub-cache filename
    min_size: int  # smallest H and W the backbone's pooling stack accepts

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Names follow lpips' ``net=`` argument. Minimum sizes measured on lpips 0.1.4 (smaller inputs make a pooling
# layer produce an empty map). The URLs are torchvision's ``IMAGENET1K_V1`` weights of AlexNet, VGG16 and
# SqueezeNet 1.1, written out: importing ``torchvision.models`` to read them costs every command a second.
_TORCHVISION_MODELS = "https://download.pytorch.org/models"
_BACKBONES: dict[str, _Backbone] = {
    "alex": _Backbone(f"{_TORCHVISION_MODELS}/alexnet-owt-7be5be79.pth", min_size=31),
    "vgg": _Backbone(f"{_TORCHVISION_MODELS}/vgg16-397923af.pth", min_size=16),
    "squeeze": _Backbone(f"{_TORCHVISION_MODELS}/squeezenet1_1-b8a52dc0.pth", min_size=17),
}
_ALIASES = {"vgg16": "vgg"}

# Hub-cache paths we already warned about in this process (cleared by tests).
_WARNED_ONCE: set[str] = set()


def _canonical_net(net: str) -> str:
    """Map an LPIPS backbone name (``"alex"``, ``"vgg"``/``"vgg16"``, ``"squeeze"``) to its canonical name."""
    name = _ALIASES.get(net, net)
    if name not in _BACKBONES:
        choices = sorted([*_BACKBONES, *_ALIASES])
        raise ValueError(f"net must be one of {choices}, got {net!r}")
    return name


def lpips_weights_path(net: str = "alex") -> Path:
    """Where torchvision caches the ImageNet weights of LPIPS backbone ``net``.

    ``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub`` or ``~/.cache/torch/hub`` by default), e.g.
    ``alexnet-owt-7be5be79.pth`` for ``"alex"`` and ``vgg16-397923af.pth`` for ``"vgg"``.
    """
    backbone = _BACKBONES[_canonical_net(net)]
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone.filename


def _warn_once(key: str, message: str) -> None:
    """Emit ``message`` as an :class:`LPIPSUnavailableWarning` unless ``key`` was already warned about."""
    if key in _WARNED_ONCE:
        return
    _WARNED_ONCE.add(key)
    warnings.warn(message, LPIPSUnavailableWarning, stacklevel=4)


def _build_lpips(net: str) -> nn.Module:
    """Build ``lpips.LPIPS`` with calibrated linear layers and a random backbone, downloading nothing.

    The global torch RNG is left untouched (the random backbone is drawn in a forked RNG), and torchvision's
    deprecation warnings about lpips' use of ``pretrained=`` are silenced.
    """
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)


def _torchvision_key(lpips_backbone_key: str) -> str:
    """``"slice2.3.weight"`` (lpips) → ``"features.3.weight"`` (torchvision).

    lpips' backbones split torchvision's ``features`` Sequential into ``slice1..sliceK`` and keep each layer's
    original index as its name inside the slice, so dropping the slice name recovers torchvision's key.
    """
    _slice, index_and_leaf = lpips_backbone_key.split(".", 1)
    return f"features.{index_and_leaf}"


def _load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load torchvision's cached ``features.*`` weights at ``path`` into lpips' sliced ``backbone``.

    Raises ``KeyError`` (missing key), ``RuntimeError`` (shape mismatch) or an unpickling error (not a plain
    state dict) — the caller turns these into a disabled loss.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"expected a state dict, found {type(state).__name__}")
    remapped = {}
    for key in backbone.state_dict():
        source = _torchvision_key(key)
        if source not in state:
            raise KeyError(f"missing {source!r}")
        remapped[key] = state[source]
    backbone.load_state_dict(remapped, strict=True)


def _freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients for every parameter of ``module`` and put it in eval mode."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


class PerceptualLoss(nn.Module):
    """Mean LPIPS distance between two image batches, or a zero loss when the backbone is unavailable.

    Args:
        net: LPIPS backbone, ``"alex"`` (default, as in most tokenizers), ``"vgg"`` / ``"vgg16"`` or
            ``"squeeze"``.
        enabled: ``False`` turns the term off without touching the hub cache (no warning).
        lazy: defer loading the backbone (and any warning) to the first use of ``enabled``, ``status``,
            ``lpips_network`` or :meth:`forward`; ``.to()``/``.double()`` before that still apply to the net.

    Attributes:
        enabled: whether :meth:`forward` computes LPIPS (``False`` → it returns zero).
        status: one-line human-readable description, e.g.
            ``"LPIPS enabled (alex, weights from <hub>/checkpoints/alexnet-owt-7be5be79.pth)"`` or
            ``"LPIPS disabled: backbone weights not found at <path>; perceptual term is 0"``.
        net: the canonical backbone name.
        weights_path: the hub-cache file the backbone is (or would be) loaded from.

    Shapes:
        ``x``, ``y``: float ``[N, 3, H, W]`` or ``[B, T, 3, H, W]`` in ``[0, 1]``, same shape;
        ``H, W`` at least 31 (alex), 16 (vgg) or 17 (squeeze). Output: scalar (0-dim) tensor.
    """

    def __init__(self, net: str = "alex", enabled: bool = True, lazy: bool = False) -> None:
        super().__init__()
        self.net = _canonical_net(net)
        self.min_size = _BACKBONES[self.net].min_size
        self.weights_path = lpips_weights_path(self.net)
        # Deliberately bypass nn.Module.__setattr__: an unregistered module stays out of parameters(),
        # state_dict() and apply(); _apply() below still moves it. Until it exists, a one-element probe records
        # where .to()/.double() sent this module, so a lazily built net lands on the same device and dtype.
        object.__setattr__(self, "_lpips_net", None)
        object.__setattr__(self, "_probe", torch.zeros(1))
        self._requested = enabled
        self._state: tuple[bool, str] | None = None
        if not lazy:
            self._resolve()

    def _resolve(self) -> tuple[bool, str]:
        """``(enabled, status)``, setting the loss up on the first call (see ``lazy``)."""
        if self._state is None:
            self._state = self._setup(self._requested)
            if self._lpips_net is not None:
                self._lpips_net.to(device=self._probe.device, dtype=self._probe.dtype)
            logger.info(self._state[1])
        return self._state

    @property
    def enabled(self) -> bool:
        """Whether :meth:`forward` computes LPIPS (``False`` → it returns zero)."""
        return self._resolve()[0]

    @property
    def status(self) -> str:
        """One-line, human-readable description of whether LPIPS is on and where its weights came from."""
        return self._resolve()[1]

    def _setup(self, enabled: bool) -> tuple[bool, str]:
        """Build and load the LPIPS net if possible; return ``(enabled, status)``."""
        if not enabled:
            return False, "LPIPS disabled by configuration (enabled=False); perceptual term is 0"
        path = self.weights_path
        backbone = _BACKBONES[self.net]
        if not path.is_file():
            _warn_once(
                str(path),
                f"LPIPS perceptual loss disabled: torchvision's {self.net!r} backbone weights are not in the torch "
                f"hub cache and cannot be downloaded here. Place {backbone.filename} (from {backbone.url}) at "
                f"{path} (or point TORCH_HOME at a cache that has it) to enable it; training continues without "
                "the perceptual term.",
            )
            return False, f"LPIPS disabled: backbone weights not found at {path}; perceptual term is 0"
        lpips_net = _build_lpips(self.net)
        try:
            _load_backbone_weights(lpips_net.net, path)
        except Exception as error:  # any unreadable file means "disabled", with the reason in the status
            reason = f"{type(error).__name__}: {error}"
            _warn_once(
                str(path),
                f"LPIPS perceptual loss disabled: could not load the {self.net!r} backbone weights from {path} "
                f"({reason}). Replace it with torchvision's {backbone.filename} from {backbone.url}; training "
                "continues without the perceptual term.",
            )
            return (
                False,
                f"LPIPS disabled: could not load backbone weights from {path} ({reason}); perceptual term is 0",
            )
        object.__setattr__(self, "_lpips_net", _freeze(lpips_net))
        return True, f"LPIPS enabled ({self.net}, weights from {path})"

    @property
    def lpips_network(self) -> nn.Module | None:
        """The frozen ``lpips.LPIPS`` module (``None`` when disabled). Not part of ``state_dict()``."""
        self._resolve()
        return self._lpips_net

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> PerceptualLoss:
        """Apply ``fn`` (``.to``, ``.cuda``, ``.double`` …) to the unregistered LPIPS net as well."""
        super()._apply(fn, recurse=recurse)
        if recurse:
            object.__setattr__(self, "_probe", fn(self._probe))
            if self._lpips_net is not None:
                self._lpips_net._apply(fn, recurse=True)
        return self

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Set this module's mode; the LPIPS net itself stays in eval mode (its dropout must stay off)."""
        super().train(mode)
        if self._lpips_net is not None:
            self._lpips_net.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance between ``x`` and ``y``.

        Args:
            x: float ``[N, 3, H, W]`` or ``[B, T, 3, H, W]`` in ``[0, 1]`` (e.g. the reconstruction); gradients
                flow back to it.
            y: same shape as ``x`` (e.g. the target frames).

        Returns:
            Scalar tensor: the LPIPS distance averaged over all ``N`` (or ``B·T``) images, in the LPIPS net's
            dtype. When disabled, a plain ``torch.zeros((), device=x.device, dtype=x.dtype)`` that does not
            require grad: it adds to a loss sum without changing its gradients, but ``.backward()`` on it
            alone raises.

        Raises:
            ValueError: wrong rank, channel count, dtype, too-small ``H``/``W``, empty batch, ``x``/``y``
                shape mismatch, or inputs on another device than the LPIPS net.
        """
        self._validate(x, y)
        if not self.enabled:
            return torch.zeros((), device=x.device, dtype=x.dtype)
        if x.ndim == 5:
            x = rearrange(x, "b t c h w -> (b t) c h w")
            y = rearrange(y, "b t c h w -> (b t) c h w")
        distances = self._lpips_net(
            self._to_lpips_range(x, "x"), self._to_lpips_range(y, "y")
        )  # [N, 1, 1, 1]
        return distances.mean()

    def _to_lpips_range(self, images: torch.Tensor, name: str) -> torch.Tensor:
        """``[N, 3, H, W]`` in ``[0, 1]`` → LPIPS' ``[-1, 1]`` in the LPIPS net's dtype.

        A device mismatch is an error (a silent host↔device copy per step would hide a missing ``.to()``).
        """
        reference = next(self._lpips_net.parameters())
        if images.device != reference.device:
            raise ValueError(
                f"{name} is on {images.device} but PerceptualLoss is on {reference.device}; "
                "move the loss with .to(device)"
            )
        return images.to(dtype=reference.dtype) * 2.0 - 1.0

    def _validate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the argument and shapes for anything :meth:`forward` cannot take."""
        for name, images in (("x", x), ("y", y)):
            if not isinstance(images, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
            shape = tuple(images.shape)
            if images.ndim not in (4, 5):
                raise ValueError(f"{name} must be [N, 3, H, W] or [B, T, 3, H, W], got shape {shape}")
            if images.shape[-3] != 3:
                raise ValueError(f"{name} must have 3 channels at dim -3 ([..., 3, H, W]), got shape {shape}")
            if not images.is_floating_point():
                raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}")
            if images.numel() == 0:
                raise ValueError(f"{name} is empty, got shape {shape}")
            if min(images.shape[-2:]) < self.min_size:
                raise ValueError(
                    f"{name} is too small for the {self.net!r} LPIPS backbone: H and W must be "
                    f">= {self.min_size}, got shape {shape}"
                )
        if x.shape != y.shape:
            raise ValueError(
                f"x and y must have the same shape, got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )

    def extra_repr(self) -> str:
        enabled = "not yet resolved" if self._state is None else self._state[0]
        return f"net={self.net!r}, enabled={enabled}"


FOREGROUND_THRESHOLD = 0.05  # in [0, 1] pixel units: about 13 grey levels


def foreground_mask(video: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Bool ``[B, T, 1, H, W]``: pixels of ``video [B, T, C, H, W]`` (in [0, 1]) that differ by more than
    ``threshold`` in some channel from the clip's background, its per-pixel median over time.

    What moves within the clip is foreground; what stays put is background. A clip of one frame has no foreground.
    """
    background = video.median(dim=1, keepdim=True).values
    return (video - background).abs().amax(dim=2, keepdim=True) > threshold


def foreground_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the pixels of ``mask`` (``[B, T, 1, H, W]``, broadcast over channels) only; 0 when it is empty.

    Averaged over the foreground pixels alone, so a ball of a few pixels weighs as much as the whole background does
    in the plain MSE.
    """
    weight = mask.to(prediction.dtype).expand_as(prediction)
    return (weight * (prediction - target) ** 2).sum() / weight.sum().clamp_min(1.0)


def static_cells(
    video: torch.Tensor, grid: tuple[int, int], threshold: float = FOREGROUND_THRESHOLD
) -> torch.Tensor:
    """Bool ``[B, T − 1, h, w]``: token cells of ``video [B, T, C, H, W]`` (in [0, 1]) whose pixels are the same
    in frame t and frame t − 1 (no pixel of the cell differs by more than ``threshold`` in any channel).

    ``grid`` is the token grid ``(h, w)``; a cell covers ``H / h × W / w`` pixels.
    """
    return motion_marks(video, grid, threshold)[:, 1:] == UNCHANGED


def temporal_stability(features: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Squared change of the encoder ``features [B, C, T, h, w]`` between consecutive frames, over the ``static``
    cells (``[B, T − 1, h, w]``, see :func:`static_cells`) only, relative to the features' mean squared norm.

    A cell whose pixels did not change should get the same token: without this term a per-frame encoder with a
    whole-frame receptive field and per-frame normalisation moves every cell's features a little when anything in
    the frame moves, and a dense codebook turns that into tokens that flip (measured on Catch: a quarter of the
    static cells per head, frame to frame). 0 when no cell is static.
    """
    step = (features[:, :, 1:] - features[:, :, :-1]).pow(2).sum(1)  # [B, T-1, h, w]
    scale = features.detach().pow(2).sum(1).mean().clamp_min(1e-8)
    weight = static.to(step.dtype)
    return (step * weight).sum() / weight.sum().clamp_min(1.0) / scale


def token_stability(tokens: torch.Tensor, static: torch.Tensor) -> float:
    """Share of ``static`` cells (``[B, T − 1, h, w]``) whose tokens (``[B, T, h, w(, G)]``, all heads) are the same
    as in the frame before: 1.0 is a token stream that changes only where the frame does (nan without static
    cells)."""
    tokens = tokens.unsqueeze(-1) if tokens.dim() == 4 else tokens
    same = (tokens[:, 1:] == tokens[:, :-1]).all(-1)
    return float(same[static].float().mean()) if bool(static.any()) else float("nan")


#: Temperature of :func:`global_local_infonce`'s cosine similarities.
CONTRASTIVE_TEMPERATURE = 0.1


def global_local_infonce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float = CONTRASTIVE_TEMPERATURE
) -> torch.Tensor:
    """Global-local InfoNCE (ST-DIM's): ``queries [B, J, D]`` (one global vector per clip and step) score the local
    ``keys [B, J, n, D]`` (n positions) of every clip in the batch by cosine similarity / ``temperature``; at each
    (step, position) the target is the query's own clip. Mean cross-entropy over ``B · J · n``.

    Keys that are the same in every clip (a static background) give every clip the same score, so they add nothing
    to the gradient: the queries learn what tells the clips apart.
    """
    q = F.normalize(queries, dim=-1)
    k = F.normalize(keys, dim=-1)
    scores = torch.einsum("bjd,cjnd->jnbc", q, k) / temperature  # [J, n, B (query), B (key)]
    target = torch.arange(queries.shape[0], device=queries.device).expand(*scores.shape[:3])
    return F.cross_entropy(scores.flatten(0, 2).float(), target.flatten())


def token_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    changed: torch.Tensor | None = None,
    change_weight: float = 0.0,
) -> torch.Tensor:
    """Logits ``[..., G, K]`` and ids ``[..., G]`` → mean cross-entropy (with label smoothing), plus
    ``change_weight`` × the mean over the positions where ``changed`` (bool ``[...]``) is True — the tokens that
    differ from the frame before, which a plain mean lets copying ignore (nothing added when none changed)."""
    per_id = per_id_cross_entropy(logits, target, label_smoothing)
    loss = per_id.mean()
    if changed is None or change_weight == 0:
        return loss
    weight = changed.to(per_id.dtype)
    return loss + change_weight * (per_id.mean(-1) * weight).sum() / weight.sum().clamp_min(1.0)


def per_id_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Logits ``[..., G, K]`` and ids ``[..., G]`` → the cross-entropy (with label smoothing) of every id, float32
    ``[..., G]``."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        label_smoothing=label_smoothing,
        reduction="none",
    ).view(target.shape)
