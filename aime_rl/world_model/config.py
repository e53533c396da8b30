"""Configuration of the :class:`~aime_rl.world_model.vrnn.VRNN`: :class:`VRNNConfig` and the checks around it.

Holds the hyperparameter dataclass (JSON-able, saved with the weights), the config of a VRNN on a given perceiver
(:func:`config_for_perceiver`, with the sizes :func:`perception_spec` takes from it), and the checks of a loaded
``config.json`` (:func:`_check_loaded_sizes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..utils.validation import check_positive, check_size_estimate

__all__ = ["REWARD_LOSSES", "VRNNConfig", "config_for_perceiver", "normalise", "perception_spec"]

REWARD_LOSSES = ("symlog", "mse")


@dataclass
class VRNNConfig:
    """Hyperparameters of :class:`~aime_rl.world_model.vrnn.VRNN` (JSON-able; saved with the weights).

    Attributes:
        action_dim: number of discrete actions (``discrete=True``) or size of a continuous action vector.
        discrete: integer actions ``[B, T]`` (one-hot encoded) or float actions ``[B, T, action_dim]``.
        hidden_dim: LSTM state size H. latent_dim: z size Z. embed_dim: frame embedding size.
        mlp_dim: width of the posterior/prior/head MLPs. decoder_channels: channels of the token-grid conv nets.
        max_components: K, the truncation level of the stick-breaking mixture prior.
        min_std: lower bound of every Gaussian standard deviation (posterior and prior components).
        context_window: frames the perceiver's attention sees (``extract_context(window=...)``); None = all.
        kl_samples: Monte-Carlo samples of ``KL(q || mixture)``.
        free_nats: DreamerV3 free nats on the per-step KL (``0``: off).
        kl_balance: DreamerV3 KL balancing weight of the prior (``None``: plain KL).
        kl_weight, stick_kl_weight, concentration_kl_weight, frame_weight, reward_weight, continue_weight,
            context_weight: loss weights (the concentration KL is a global term, added once per batch).
        reward_loss: ``"symlog"`` (MSE in symlog space) or ``"mse"``.
        open_loop_steps: ``n`` of the open-loop loss (see the :mod:`~aime_rl.world_model.vrnn` module docstring;
            ``0``: off, the plain ELBO).
        open_loop_weight: its weight (it is a per-frame token cross-entropy, on the scale of ``frame_nll``).
        dp_prior_shape, dp_prior_rate: Gamma prior over the DP concentration alpha0.
        active_threshold: a component is active when its mean weight ``pi_k`` exceeds this.
        context_dim, token_grid, num_quantizers, num_codes, code_dim: taken from the perceiver (checked on load).
    """

    action_dim: int
    discrete: bool = True
    hidden_dim: int = 256
    latent_dim: int = 32
    embed_dim: int = 256
    mlp_dim: int = 256
    decoder_channels: int = 64
    max_components: int = 15
    min_std: float = 0.1
    context_window: int | None = 16
    kl_samples: int = 1
    free_nats: float = 1.0
    kl_balance: float | None = 0.8
    kl_weight: float = 1.0
    stick_kl_weight: float = 1.0
    concentration_kl_weight: float = 1e-3
    frame_weight: float = 1.0
    reward_weight: float = 1.0
    continue_weight: float = 1.0
    context_weight: float = 1.0
    reward_loss: str = "symlog"
    open_loop_steps: int = 0
    open_loop_weight: float = 1.0
    dp_prior_shape: float = 1.0
    dp_prior_rate: float = 1.0
    active_threshold: float = 0.01
    context_dim: int | None = None
    token_grid: tuple[int, int] | None = None
    num_quantizers: int | None = None
    num_codes: int | None = None
    code_dim: int | None = None

    def __post_init__(self) -> None:
        positive = ("action_dim", "hidden_dim", "latent_dim", "embed_dim", "mlp_dim", "decoder_channels")
        for name in (*positive, "kl_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VRNNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_components < 2:
            raise ValueError(f"VRNNConfig.max_components must be >= 2, got {self.max_components}")
        if not self.min_std > 0:
            raise ValueError(f"VRNNConfig.min_std must be > 0, got {self.min_std}")
        if self.kl_balance is not None and not 0.0 <= self.kl_balance <= 1.0:
            raise ValueError(f"VRNNConfig.kl_balance must be in [0, 1] or None, got {self.kl_balance}")
        if self.reward_loss not in REWARD_LOSSES:
            raise ValueError(
                f"VRNNConfig.reward_loss must be one of {REWARD_LOSSES}, got {self.reward_loss!r}"
            )
        if int(self.open_loop_steps) < 0:
            raise ValueError(f"VRNNConfig.open_loop_steps must be >= 0, got {self.open_loop_steps}")
        if self.free_nats < 0:
            raise ValueError(f"VRNNConfig.free_nats must be >= 0, got {self.free_nats}")
        if self.token_grid is not None:
            self.token_grid = (int(self.token_grid[0]), int(self.token_grid[1]))


def config_for_perceiver(
    perceiver: nn.Module, action_dim: int, discrete: bool, options: dict[str, Any]
) -> VRNNConfig:
    """The :class:`VRNNConfig` of a VRNN on ``perceiver``: ``options`` plus the sizes taken from the perceiver.

    Raises ``ValueError`` for an unknown option and for a size in ``options`` that contradicts the perceiver's.
    """
    known = {f.name for f in dataclasses.fields(VRNNConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown VRNN option(s) {unknown}; valid: {sorted(known - {'action_dim', 'discrete'})}"
        )
    spec = perception_spec(perceiver)
    for name, value in spec.items():
        given = options.get(name)
        if given is not None and normalise(given) != normalise(value):
            raise ValueError(f"{name}={given!r} does not match the perceiver's {value!r}")
    return VRNNConfig(action_dim=int(action_dim), discrete=bool(discrete), **{**options, **spec})


def _check_loaded_sizes(config: dict[str, Any], source: Any) -> None:
    """Refuse sizes < 1 and configs whose layers would hold absurdly many elements, naming the keys."""
    keys = (
        "action_dim",
        "hidden_dim",
        "latent_dim",
        "embed_dim",
        "mlp_dim",
        "decoder_channels",
        "max_components",
    )
    check_positive({k: config[k] for k in keys}, str(source))
    h, z, m, c = config["hidden_dim"], config["latent_dim"], config["mlp_dim"], config["decoder_channels"]
    d = config["context_dim"] or 1
    grid = config["token_grid"] or (1, 1)
    check_size_estimate(
        {
            "hidden_dim (LSTM)": 4 * h * (h + z + d + config["action_dim"]),
            "mlp_dim (posterior, prior and heads)": m * (m + 4 * (h + z) + 2 * d + config["embed_dim"]),
            "max_components × latent_dim × mlp_dim (prior components)": 2 * config["max_components"] * z * m,
            "decoder_channels, embed_dim (token-grid nets)": c
            * (9 * c + (h + z + config["embed_dim"]) * grid[0] * grid[1]),
        },
        f"VRNN ({source})",
    )


def perception_spec(perceiver: nn.Module) -> dict[str, Any]:
    """Sizes the VRNN takes from the perceiver; raises for setups it does not support."""
    tokenizer = getattr(perceiver, "tokenizer", None)
    if tokenizer is None or not hasattr(perceiver, "predictor"):
        raise ValueError(f"perceiver must be a CausalPerceiverIO, got {type(perceiver).__name__}")
    if tokenizer.temporal_factor != 1:
        raise ValueError(
            "the VRNN needs one token step per frame: use a perceiver with temporal_downsample=False"
        )
    height, width = perceiver.frame_size
    return {
        "context_dim": int(perceiver.context_dim),
        "token_grid": tuple(tokenizer.token_grid(height, width)),
        "num_quantizers": int(tokenizer.num_quantizers),
        "num_codes": int(tokenizer.num_codes),
        "code_dim": int(tokenizer.config.code_dim),
    }


def normalise(value: Any) -> Any:
    """A size as compared between configs: lists (from JSON) become tuples."""
    return tuple(value) if isinstance(value, list | tuple) else value


_perception_spec = perception_spec  # the old private names (re-exported by vrnn.py)
_normalise = normalise
