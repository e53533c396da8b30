"""Input checks that raise ``ValueError`` naming the argument, the expected and the received shape.

Two families:

* :func:`as_float_video` / :func:`as_float_frames`: loose checks for any image tensor in the library (rank,
  channels, dtype, NaN/inf) — used for things like predictions on their way to TensorBoard.
* :func:`as_model_video` / :func:`as_model_frames`: the one place where the *perception model's* inputs are checked
  (tokenizer ``encode``/``loss``/stream ``step``, the predictor's ``extract_context``/``forward``/``generate``,
  ``ContextStream.step``). On top of the loose checks they refuse empty dims, float values outside ``[0, 1]``
  (e.g. a forgotten ``/ 255``), frames of another size than the model's ``frame_size`` and any channel count but
  the model's (a 4-channel frame is neither RGBA nor a frame stack here), and they convert the dtype: uint8
  ``[0, 255]`` → ``[0, 1]``, and float16/bfloat16/float64 → the model's dtype.

:func:`config_kwargs` checks a JSON config against a config dataclass (unknown/missing keys, types) and
:func:`check_size_estimate` refuses absurd model sizes before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

import torch

#: Float model inputs may leave ``[0, 1]`` by this much (resampling/rounding noise) before they are refused.
UNIT_RANGE_TOLERANCE = 1e-3
#: Largest model (parameters + latent/codebook tensors, in elements) a config may describe: about 8 GB in float32.
MAX_MODEL_ELEMENTS = 2**31

VIDEO_DIMS = ("B", "T", "C", "H", "W")
FRAME_DIMS = ("B", "C", "H", "W")


def as_float_video(video: torch.Tensor, name: str = "video", channels: int | None = None) -> torch.Tensor:
    """Check a video ``[B, T, C, H, W]`` and return it as float in ``[0, 1]``.

    uint8 input (``[0, 255]``) is converted; float input is taken as already in ``[0, 1]``. Wrong rank, wrong
    channel count, non-tensor, non-numeric dtypes and NaN/inf raise ``ValueError``.
    """
    _check_rank(video, name, VIDEO_DIMS)
    return _as_float_frames(video, name, channels, channel_dim=2)


def as_float_frames(frames: torch.Tensor, name: str = "frames", channels: int | None = None) -> torch.Tensor:
    """Check one frame per batch row ``[B, C, H, W]`` and return it as float in ``[0, 1]``."""
    _check_rank(frames, name, FRAME_DIMS)
    return _as_float_frames(frames, name, channels, channel_dim=1)


def _check_rank(x: Any, name: str, dims: tuple[str, ...]) -> None:
    layout = f"[{', '.join(dims)}]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != len(dims):
        raise ValueError(f"{name} must have shape {layout} ({len(dims)} dims), got shape {tuple(x.shape)}")


def _as_float_frames(x: torch.Tensor, name: str, channels: int | None, channel_dim: int) -> torch.Tensor:
    _check_channels(x, name, channels, channel_dim)
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    _check_float_dtype(x, name)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return x


def _check_channels(x: torch.Tensor, name: str, channels: int | None, channel_dim: int) -> None:
    got = x.shape[channel_dim]
    if channels is None or got == channels:
        return
    hint = ""
    if got == 4 and channels == 3:
        hint = (
            ": stacked frames and RGBA frames are not supported; pass one RGB frame per step "
            "(the env wrappers turn grayscale into RGB)"
        )
    raise ValueError(
        f"{name} must have {channels} channels at dim {channel_dim}, got {got} channels "
        f"(shape {tuple(x.shape)}){hint}"
    )


def _check_float_dtype(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {x.dtype}")


# -- the perception model's inputs -----------------------------------------------------------------------------


def as_model_video(
    video: torch.Tensor,
    name: str = "video",
    *,
    channels: int,
    downsample: int = 1,
    frame_size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Check a model input video ``[B, T, C, H, W]`` and return it as ``dtype`` in ``[0, 1]``, same shape.

    Accepted: uint8 in ``[0, 255]`` (divided by 255) and float16/bfloat16/float32/float64 in ``[0, 1]`` (up to
    :data:`UNIT_RANGE_TOLERANCE`; converted to ``dtype``, the model's). Refused with ``ValueError`` naming
    ``name``: not a tensor, wrong rank, any dim of size 0, ``C != channels``, ``(H, W) != frame_size`` (when
    given; otherwise H and W must be multiples of ``downsample``), other dtypes, NaN/inf, values outside [0, 1].
    """
    _check_rank(video, name, VIDEO_DIMS)
    return _as_model_input(video, name, VIDEO_DIMS, channels, downsample, frame_size, dtype)


def as_model_frames(
    frames: torch.Tensor,
    name: str = "frames",
    *,
    channels: int,
    downsample: int = 1,
    frame_size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One frame per batch row ``[B, C, H, W]``, checked and converted like :func:`as_model_video`."""
    _check_rank(frames, name, FRAME_DIMS)
    return _as_model_input(frames, name, FRAME_DIMS, channels, downsample, frame_size, dtype)


def _as_model_input(
    x: torch.Tensor,
    name: str,
    dims: tuple[str, ...],
    channels: int,
    downsample: int,
    frame_size: tuple[int, int] | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    _check_not_empty(x, name, dims)
    _check_channels(x, name, channels, dims.index("C"))
    _check_frame_size(x, name, downsample, frame_size)
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    _check_float_dtype(x, name)
    check_unit_range(x, name)
    return x.to(dtype)


def _check_not_empty(x: torch.Tensor, name: str, dims: tuple[str, ...]) -> None:
    empty = [f"{d}=0" for d, size in zip(dims, x.shape, strict=True) if size == 0]
    if empty:
        raise ValueError(
            f"{name} must have at least one element along every dim of [{', '.join(dims)}], "
            f"got shape {tuple(x.shape)} ({', '.join(empty)})"
        )


def _check_frame_size(
    x: torch.Tensor, name: str, downsample: int, frame_size: tuple[int, int] | None
) -> None:
    height, width = x.shape[-2:]
    if frame_size is not None and (height, width) != tuple(frame_size):
        raise ValueError(
            f"{name} must have frames of the model's frame_size {frame_size[0]}x{frame_size[1]}, got "
            f"{height}x{width} (shape {tuple(x.shape)}); resize the frames first (the env wrappers do)"
        )
    check_spatial_divisible(height, width, downsample, name)


def check_unit_range(x: torch.Tensor, name: str, tolerance: float = UNIT_RANGE_TOLERANCE) -> None:
    """Raise ``ValueError`` unless float ``x`` (any shape) is finite and within ``[0, 1]`` ± ``tolerance``."""
    low, high = torch.aminmax(x.detach())
    low, high = float(low), float(high)
    if -tolerance <= low and high <= 1 + tolerance:  # False for NaN as well
        return
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or inf values")
    hint = " (did you forget to divide by 255?)" if high > 1.5 else ""
    raise ValueError(
        f"{name} must be float in [0, 1] (or uint8 in [0, 255]), got values in [{low:.4g}, {high:.4g}]{hint}"
    )


def check_spatial_divisible(height: int, width: int, factor: int, name: str = "video") -> None:
    """Raise if ``height``/``width`` are not multiples of the model's spatial ``factor``."""
    if height % factor or width % factor:
        raise ValueError(
            f"{name} height and width must be divisible by downsample={factor}, got {height}x{width}"
        )


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """``batch_size`` as an ``int >= 1`` (Python or NumPy integer); anything else raises ``ValueError``."""
    if not isinstance(batch_size, bool):
        try:
            value = operator.index(batch_size)
        except TypeError:
            value = None
        if value is not None and value >= 1:
            return value
    raise ValueError(f"{name} must be an integer >= 1, got {batch_size!r}")


def row_index(rows: torch.Tensor, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """Rows of a batch of ``batch_size`` → int64 indices ``[k]`` on ``device`` (for a stream's ``select``).

    ``rows`` is a bool mask ``[batch_size]`` with at least one True, or integer indices ``[k]`` (k >= 1) in
    ``[0, batch_size)``; an index may repeat (each occurrence becomes its own row). Numpy arrays and lists are
    accepted. Anything else raises ``ValueError`` naming ``rows``.
    """
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.shape != (batch_size,):
            raise ValueError(f"rows must be a bool mask [{batch_size}], got shape {tuple(rows.shape)}")
        rows = rows.nonzero().squeeze(1)
    elif rows.is_floating_point() or rows.is_complex() or rows.dim() != 1:
        raise ValueError(
            f"rows must be a bool mask [{batch_size}] or int64 indices [k], got {rows.dtype} {tuple(rows.shape)}"
        )
    if rows.numel() == 0:
        raise ValueError("rows must select at least one row, got none")
    if bool((rows < 0).any()) or bool((rows >= batch_size).any()):
        raise ValueError(
            f"rows must be indices in [0, {batch_size}), got values in [{int(rows.min())}, {int(rows.max())}]"
        )
    return rows.to(device=device, dtype=torch.long)


# -- configs read from JSON --------------------------------------------------------------------------------------


def config_kwargs(
    config_class: type,
    config: Mapping[str, Any],
    source: Any,
    optional: Collection[str] = (),
    require_all: bool = True,
) -> dict[str, Any]:
    """Check ``config`` (e.g. a parsed ``config.json``) against the dataclass ``config_class``; return kwargs.

    Every key must be a field (unknown key → ``ValueError``); with ``require_all`` every field must be present
    except those in ``optional`` (fields added after the format was first written; they take their default).
    Each value must match the field's annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``,
    ``tuple[...]``, ``dict``); JSON lists become tuples for tuple fields and ints are accepted for floats.
    A field annotated with another dataclass (a nested config) takes a mapping, checked the same way and returned
    as an instance of that dataclass; its errors name ``"{source}: {field}"`` and ``optional`` names its keys as
    ``"field.key"``. Errors name ``source`` and the key.
    """
    hints = typing.get_type_hints(config_class)
    fields = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; expected keys: {sorted(fields)}")
    missing = [name for name in fields if name not in config and name not in optional]
    if require_all and missing:
        raise ValueError(f"{source}: missing key {missing[0]!r} (expected {_describe(hints[missing[0]])})")
    return {
        name: _config_value(value, hints[name], source, name, optional, require_all)
        for name, value in config.items()
    }


def _config_value(
    value: Any, hint: Any, source: Any, name: str, optional: Collection[str], require_all: bool
) -> Any:
    """One value of :func:`config_kwargs`: a nested config dataclass is checked key by key, anything else by type."""
    if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return _coerce(value, hint, f"{source}: key {name!r}")
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{source}: key {name!r} must be an object of {hint.__name__} keys, got {value!r} "
            f"({type(value).__name__})"
        )
    inner = [key.split(".", 1)[1] for key in optional if key.startswith(f"{name}.")]
    return hint(**config_kwargs(hint, value, f"{source}: {name}", inner, require_all))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it matches the type ``hint`` (lists converted to tuples for tuple hints), else ``ValueError``."""
    ok, result = _match(value, hint)
    if not ok:
        raise ValueError(f"{where} must be {_describe(hint)}, got {value!r} ({type(value).__name__})")
    return result


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            ok, result = _match(value, arm)
            if ok:
                return True, result
        return False, None
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if tuple in (hint, origin):
        return _match_tuple(value, args)
    if dict in (hint, origin):
        return isinstance(value, dict), value
    if list in (hint, origin):
        return isinstance(value, list), value
    return False, None


def _match_tuple(value: Any, args: tuple) -> tuple[bool, Any]:
    if not isinstance(value, list | tuple):
        return False, None
    if not args:
        return True, tuple(value)
    items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
    if len(items) != len(value):
        return False, None
    matched = [_match(v, h) for v, h in zip(value, items, strict=True)]
    return all(ok for ok, _ in matched), tuple(result for _, result in matched)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} {'/'.join(sorted({_describe(a) for a in args}))}"
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "null")


def check_positive(values: Mapping[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the key unless every value is an integer >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{what}: {name} must be an integer >= 1, got {value!r}")


def check_size_estimate(terms: Mapping[str, int], what: str, limit: int = MAX_MODEL_ELEMENTS) -> None:
    """Refuse a model whose estimated size is absurd, before anything is allocated.

    ``terms`` maps a description naming the config keys (e.g. ``"num_latents × num_latent_channels"``) to an
    estimate of the elements (parameters, codebooks, latent arrays) they make the model allocate. A total above
    ``limit`` raises ``ValueError`` naming the largest term.
    """
    total = sum(terms.values())
    if total <= limit:
        return
    largest = max(terms, key=terms.get)
    raise ValueError(
        f"{what} is too large to build: its config asks for about {_approx(total)} elements (limit "
        f"{_approx(limit)}), mostly from {largest} (about {_approx(terms[largest])}); check the config values"
    )


def _approx(count: int) -> str:
    """``123456789`` → ``"1.23e+08"`` (without overflowing for absurdly large integers)."""
    return f"{count:.3g}" if count < 10**300 else "more than 1e300"
