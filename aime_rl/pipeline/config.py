"""The settings of one pipeline run: :class:`RunConfig`, its validation, and the layers it is built from.

A new run's settings are layered: the dataclass defaults ← the built-in experiment (``demo.toml``, with the Atari
recipe ``atari.toml`` over it for an Atari game; ``quick.toml`` for ``demo --quick``; a shipped experiment named by
``--config`` instead) ← a user's ``--config FILE`` ← command-line flags. Once the first stage has
written ``runs/<name>/config.json``, that file is the run's source of truth: later stages read it, and only what
the user sets explicitly (``--config FILE`` or a flag) is laid on top (see :mod:`aime_rl.pipeline.rundir` for which
changes are refused).

Every field carries its help text and the commands that use it in ``field(metadata=...)``: the CLI builds each
command's ``--help`` from it.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..evaluation.probe_run import DEFAULT_REPRESENTATIONS
from ..evaluation.representations import REPRESENTATIONS
from ..experiments import experiment_path
from ..perception import CausalPerceiverIO
from ..perception.config import PredictorConfig
from ..perception.presets import PRESET_ALIASES, get_preset, resolve_preset
from ..utils.validation import config_kwargs

ALGOS = ("ppo", "a2c", "dqn", "sac")
# what ``aime-rl probe`` probes by default ("belief" needs a world model) and every name it knows
PROBE_REPRESENTATIONS = DEFAULT_REPRESENTATIONS
KNOWN_REPRESENTATIONS = REPRESENTATIONS
PRESETS = ("tiny", "small", "paper")  # "seed", the old name of "paper", is still read (PRESET_ALIASES)
MAX_FRAME_SIZE = 512
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# The stages, in pipeline order, and the run settings that shape each stage's outputs: changing one of them after
# that stage has produced something would silently mix incompatible artifacts (rundir.py refuses it).
# Settings added after run directories were first written: an older config.json lacks them and gets the default.
ADDED_SETTINGS = (
    "deterministic",
    "probe_steps",
    "probe_episode_steps",
    "probe_representations",
    "tokenizer_lr",
    "frame_height",
    "predictor_kwargs",
    "decoder_steps",
)
STAGES = ("collect", "tokenizer", "context", "world_model", "agent", "evaluate", "probe")
SHAPING: dict[str, str] = {
    "env": "collect",
    "frame_size": "collect",
    "frame_height": "collect",
    "preset": "tokenizer",
    "sequence_length": "tokenizer",
    "predictor_kwargs": "context",
    "window": "agent",
}

ALL = (
    "collect",
    "train-tokenizer",
    "train-context",
    "train-world-model",
    "train-agent",
    "evaluate",
    "probe",
)
TRAINING = ("train-tokenizer", "train-context", "train-world-model")
# settings that are tables of keyword arguments: flags, config files and resumes merge them key by key
KWARG_SETTINGS = ("agent_kwargs", "predictor_kwargs")


def setting(default: Any, help: str, commands: tuple[str, ...] = ALL, choices: tuple | None = None, **kw):
    """A :class:`RunConfig` field with its help text, the commands it applies to and its choices."""
    metadata = {"help": help, "commands": commands, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass
class RunConfig:
    """Everything one pipeline run needs. ``aime-rl <command> --help`` lists the fields a command uses."""

    name: str = setting("demo", "run name: the run lives in <runs-dir>/<name> (a plain name, no path)")
    runs_dir: str = setting("runs", "directory that holds the runs")
    env: str = setting(
        "catch",
        "env preset (catch, cartpole_pixels, pong, ...: aime_rl/envs/presets) or a Gymnasium id with image "
        "observations, e.g. ALE/Breakout-v5",
        ("collect", "train-agent", "evaluate", "probe"),
    )
    preset: str = setting(
        "small", "perception model preset", ("train-tokenizer", "train-context"), choices=PRESETS
    )
    frame_size: int = setting(
        64,
        "frames are resized to frame_size × frame_size, or frame_height × frame_size (a multiple of the preset's "
        "downsample factor)",
        ("collect",),
    )
    frame_height: int = setting(
        0,
        "frame height where it differs from the width (0: square frames); Atari's 210 × 160 screens keep their "
        "shape at --frame-height 96 --frame-size 80 (the Atari recipe)",
        ("collect",),
    )
    seed: int = setting(0, "random seed of every stage")
    deterministic: bool = setting(
        False,
        "reproducible runs (CleanRL-style): seeded everything, torch.use_deterministic_algorithms, one thread",
    )
    # collection
    collect_steps: int = setting(
        20_000, "target size of the replay in env steps; a rerun tops it up with fresh seeds", ("collect",)
    )
    num_envs: int = setting(
        8,
        "parallel envs for collection, agent training and evaluation",
        ("collect", "train-agent", "evaluate"),
    )
    # perception training
    sequence_length: int = setting(8, "frames per training window", TRAINING)
    tokenizer_steps: int = setting(
        600, "tokenizer training steps (a total: more than before trains further)", ("train-tokenizer",)
    )
    decoder_steps: int = setting(
        0,
        "steps that then train the tokenizer's decoder alone on its frozen codes (a total): sharper reconstructions, "
        "the same tokens",
        ("train-tokenizer",),
    )
    context_steps: int = setting(600, "context-model training steps (a total)", ("train-context",))
    batch_size: int = setting(8, "windows per training batch", TRAINING)
    tokenizer_lr: float = setting(
        3e-3,
        "learning rate of the tokenizer trainer (a change on resume is applied and logged)",
        ("train-tokenizer",),
    )
    predictor_kwargs: dict = setting(
        {},
        "fields of the preset's predictor config for the context model (PredictorConfig), e.g. "
        "--predictor-kwarg motion_attention_bias=0",
        ("train-context",),
    )
    lr: float = setting(
        1e-3,
        "learning rate of the context-model and world-model trainers (a change on resume is applied and logged)",
        ("train-context", "train-world-model"),
    )
    # world model
    world_model_steps: int = setting(300, "world-model training steps (a total)", ("train-world-model",))
    # agent
    algo: str = setting("ppo", "Stable-Baselines3 algorithm", ("train-agent",), choices=ALGOS)
    agent_steps: int = setting(30_000, "agent training env steps", ("train-agent",))
    window: int = setting(
        8,
        "frames the context sees (saved with the agent; evaluate uses the agent's)",
        ("train-agent", "probe"),
    )
    normalize_observations: bool = setting(
        True,
        "standardise each context feature for the agent (SB3's VecNormalize on observations)",
        ("train-agent",),
    )
    agent_kwargs: dict = setting(
        {},
        "keyword arguments of the SB3 algorithm, e.g. --agent-kwarg n_steps=64 --agent-kwarg gamma=0.95",
        ("train-agent",),
    )
    # evaluation
    eval_episodes: int = setting(10, "episodes for the agent and the random baseline", ("evaluate",))
    probe_steps: int = setting(
        3000, "labelled random-policy frames collected for the state probes", ("probe",)
    )
    probe_episode_steps: int = setting(
        0,
        "cut each probe episode after this many frames (0: whole episodes); a long game (a random Pong episode is "
        "~800 frames) then gives enough episodes for the 70/10/20 split",
        ("probe",),
    )
    probe_representations: str = setting(
        ",".join(PROBE_REPRESENTATIONS),
        f"comma-separated representations to probe ({', '.join(KNOWN_REPRESENTATIONS)}); the pixel baselines' "
        "256-way probes are the slow part on Atari",
        ("probe",),
    )
    device: str = setting("cpu", "torch device: cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        # a run directory or TOML file written before "seed" was renamed "paper" keeps working
        if self.preset in PRESET_ALIASES:
            self.preset = resolve_preset(self.preset, stacklevel=3)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the frames the run stores and its model reads: ``(frame_height or frame_size, frame_size)``."""
        return (self.frame_height or self.frame_size, self.frame_size)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str, complete: bool = False) -> RunConfig:
        """A validated config from plain values (TOML, JSON); unknown keys or wrong types → ``ValueError`` naming
        ``source`` and the key. Missing keys take the defaults, unless ``complete`` (a run's ``config.json``)."""
        unknown = sorted(set(values) - set(FIELD_TYPES))
        if unknown:
            raise ValueError(f"unknown settings in {source}: {', '.join(unknown)}")
        missing = sorted(set(FIELD_TYPES) - set(values) - set(ADDED_SETTINGS))
        if complete and missing:
            raise ValueError(f"settings missing from {source}: {', '.join(missing)}")
        if complete and "tokenizer_lr" not in values and "lr" in values:
            # a run written before tokenizer_lr existed trained its tokenizer with lr; resuming keeps that
            values = {**values, "tokenizer_lr": values["lr"]}
        for key, value in values.items():
            _check_type(key, value, source)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every setting's value; raises ``ValueError`` naming the first bad one."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), "the settings")
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(
                    f"{flag(f.name)} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}"
                )
        check_name(self.name)
        for key in (
            "collect_steps",
            "num_envs",
            "sequence_length",
            "tokenizer_steps",
            "context_steps",
            "batch_size",
            "world_model_steps",
            "agent_steps",
            "window",
            "eval_episodes",
            "probe_steps",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"{flag(key)} must be a positive integer, got {getattr(self, key)}")
        for key in ("probe_episode_steps", "decoder_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{flag(key)} must be >= 0, got {getattr(self, key)}")
        self.probe_representation_names()
        if self.sequence_length < 2:
            raise ValueError(f"{flag('sequence_length')} must be at least 2 (context and a next frame)")
        if self.seed < 0:
            raise ValueError(f"{flag('seed')} must be >= 0, got {self.seed}")
        for key in ("lr", "tokenizer_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag(key)} must be a positive number, got {value}")
        self._check_frame_size()
        if not self.runs_dir:
            raise ValueError(f"{flag('runs_dir')} must not be empty")
        for key in KWARG_SETTINGS:
            value = getattr(self, key)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{key} must be a table of settings, got {value!r}")
        self._check_predictor_kwargs()
        check_device(self.device)

    def probe_representation_names(self) -> tuple[str, ...]:
        """``probe_representations`` as a tuple of names; ``ValueError`` for an empty list or an unknown name."""
        names = tuple(n.strip() for n in self.probe_representations.split(",") if n.strip())
        unknown = [n for n in names if n not in KNOWN_REPRESENTATIONS]
        if not names or unknown:
            raise ValueError(
                f"{flag('probe_representations')} must be a comma-separated list of "
                f"{', '.join(KNOWN_REPRESENTATIONS)}, got {self.probe_representations!r}"
            )
        return names

    def _check_predictor_kwargs(self) -> None:
        """Fields of the predictor config with values of their type that the model accepts (built on the meta
        device: nothing allocated), so a bad one is refused before any stage writes."""
        if not self.predictor_kwargs:
            return
        source = "--predictor-kwarg / predictor_kwargs"
        kwargs = config_kwargs(PredictorConfig, self.predictor_kwargs, source, require_all=False)
        preset = get_preset(self.preset, frame_size=self.frame_shape)
        try:
            with torch.device("meta"):
                CausalPerceiverIO.from_config(replace(preset, predictor=replace(preset.predictor, **kwargs)))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    def _check_frame_size(self) -> None:
        factor = get_preset(self.preset).tokenizer.downsample
        for key in ("frame_size", "frame_height"):
            value = getattr(self, key)
            if key == "frame_height" and value == 0:
                continue
            if not factor <= value <= MAX_FRAME_SIZE or value % factor:
                square = " (or 0: square frames)" if key == "frame_height" else ""
                raise ValueError(
                    f"{flag(key)} must be a multiple of {factor} (the {self.preset!r} preset's downsample "
                    f"factor) between {factor} and {MAX_FRAME_SIZE}{square}, got {value}"
                )


FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}[f.type]
    for f in fields(RunConfig)
}
DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(RunConfig)
}


def flag(key: str) -> str:
    """``frame_size`` → ``--frame-size``."""
    return "--" + key.replace("_", "-")


def flag_setting(key: str, value: Any) -> str:
    """A setting as the command line gives it: ``--frame-size 64``, ``--predictor-kwarg motion_attention_bias=0.0``
    (a table: one flag per key)."""
    if key in KWARG_SETTINGS:
        name = flag(key.removesuffix("s"))
        return " ".join(f"{name} {k}={toml_value(v)}" for k, v in value.items())
    return f"{flag(key)} {value}"


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (what ``--agent-kwarg KEY=VALUE`` parses back): ``true``, ``"mean"``, ``0.5``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _check_type(key: str, value: Any, source: str) -> None:
    kind = FIELD_TYPES[key]
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"{key} in {source} must be {kind.__name__}, got {type(value).__name__} {value!r}")


def check_name(name: str) -> None:
    """A run name is a plain name inside ``--runs-dir``: no path separators, not ``.``/``..``, not empty."""
    if not isinstance(name, str) or not PLAIN_NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"--name must be a plain name (letters, digits, '.', '_', '-'; not starting with '.' or '-'), "
            f"got {name!r}"
        )


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine."""
    if device == "cpu":
        return
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML experiment file; a missing or malformed file raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"invalid TOML in {path}: {err}") from err
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown settings in {path}: {', '.join(unknown)}")
    for key, value in values.items():
        _check_type(key, value, str(path))
    return values


def layer(base: dict[str, Any], *overlays: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each overlay laid on top; the tables of :data:`KWARG_SETTINGS` are merged key by key.

    ``agent_kwargs`` belong to an algorithm: an overlay that sets another ``algo`` than the one so far starts the
    table afresh (PPO's ``n_epochs`` from ``demo.toml`` is not a DQN setting), with only the overlay's own keys.
    """
    out = dict(base)
    for overlay in overlays:
        if "algo" in overlay and overlay["algo"] != out.get("algo"):
            out["agent_kwargs"] = {}
        for key, value in overlay.items():
            if key in KWARG_SETTINGS and isinstance(out.get(key), dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


# what the Atari recipe does not lay under a run of another game: the run's name and its game are the user's
RECIPE_OWN_KEYS = ("name", "env")


def default_values(quick: bool = False, atari: bool = False) -> dict[str, Any]:
    """The dataclass defaults with the built-in experiment laid on top: ``quick.toml`` for ``demo --quick``, else
    ``demo.toml`` — and for a run of an Atari game (``atari``) the Atari recipe ``atari.toml`` over that, all but
    its run name and game (:data:`RECIPE_OWN_KEYS`)."""
    if quick:
        return layer(DEFAULTS, load_toml(experiment_path("quick")))
    values = layer(DEFAULTS, load_toml(experiment_path("demo")))
    if atari:
        recipe = load_toml(experiment_path("atari"))
        values = layer(values, {k: v for k, v in recipe.items() if k not in RECIPE_OWN_KEYS})
    return values
