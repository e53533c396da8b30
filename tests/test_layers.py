"""The package's layers point one way (DESIGN.md, "Layers point down"), checked on the source with ``ast``.

Three rules over every module of ``aime_rl/``, one test each; a failure lists the offending ``file:line``:

- a function-local import is for an optional third-party package (:data:`LOCAL_IMPORTS_ALLOWED`), never for an
  ``aime_rl`` module (absolute or relative): a local import of the package hides an import cycle;
- a module imports only from its own layer's package or a layer below (:data:`LAYERS`); packages of the same layer
  import each other only where :data:`SAME_LAYER_ALLOWED` says so;
- a module never imports a private name (``_x``) from another ``aime_rl`` package (its own package is fine).

Imports under ``if TYPE_CHECKING:`` count like any other: an annotation is a dependency too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aime_rl

PACKAGE_DIR = Path(aime_rl.__file__).resolve().parent
ROOT = "aime_rl"  # the layer key of the package root, aime_rl/__init__.py

#: Layer of each package (or top-level module) of ``aime_rl``, by rank, from the bottom up, following the data flow.
#: A module may import from its own package and from any package of a lower rank.
LAYERS: dict[str, int] = {
    "utils": 0,
    "data": 1,
    "envs": 1,
    "experiments": 1,  # the experiment TOML files, shipped as package data; imports nothing
    "perception": 1,
    "replay": 1,
    "training": 2,
    "world_model": 2,
    "wrappers": 3,
    "agents": 3,
    "evaluation": 3,
    ROOT: 4,  # `import aime_rl` registers the env ids (envs, wrappers); nothing inside the package imports it
    "pipeline": 4,
    "cli": 5,
}

#: (importer, imported) packages of the same layer that may import each other in this direction, with the reason.
SAME_LAYER_ALLOWED: dict[tuple[str, str], str] = {
    ("world_model", "training"): (
        "the VRNN trainer is built on the generic Trainer and TrainerConfig (DESIGN: training sits below world_model)"
    ),
    ("agents", "wrappers"): (
        "the SB3 glue finds, drives and refreshes the VecContextObservation of the training env and loads "
        "perception models as the wrappers do (DESIGN: wrappers sit below agents)"
    ),
    ("evaluation", "wrappers"): (
        "the probes preprocess frames and build VRNN beliefs exactly as the wrappers do, so the probed features are "
        "the agent's observations"
    ),
}

#: Third-party packages that may be imported inside a function, with the reason.
LOCAL_IMPORTS_ALLOWED: dict[str, str] = {
    "ale_py": "optional extra [atari]: only the ALE/<Game>-v5 ids need it, imported when one is asked for",
    "moviepy": "optional extra [video]: only Gymnasium's RecordVideo / SB3's VecVideoRecorder need it",
    "lpips": "only the tokenizer's perceptual loss needs it, built when perceptual_weight > 0 (slow import)",
    "torchvision": "only image grids need it; it is slow to import",
    "stable_baselines3": "`import aime_rl` (envs) stays free of SB3; Monitor is imported when an env is made",
}


@dataclass(frozen=True)
class Import:
    """One imported module: ``import m`` gives one for ``m``; ``from m import a, b`` gives one for each of ``a``,
    ``b`` that is itself a module of ``aime_rl`` (``from aime_rl.utils import metrics``) and one for ``m`` with the
    other names."""

    path: Path
    line: int
    module: str  # absolute dotted name
    names: tuple[str, ...]  # the names taken from ``module`` (``from m import ...``); () for ``import m``
    local: bool  # inside a function or method

    def where(self) -> str:
        return f"{self.path.relative_to(PACKAGE_DIR.parent)}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """True for a module or package of ``aime_rl`` (``aime_rl.utils``, ``aime_rl.cli``)."""
    relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (PACKAGE_DIR / relative).is_dir() or (PACKAGE_DIR / relative).with_suffix(".py").is_file()


def layer_of(dotted: str) -> str:
    """The layer key of an ``aime_rl`` module: its package under ``aime_rl`` (or the top-level module's name)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def own_package(path: Path) -> list[str]:
    """The package a relative import of ``path`` starts from, as a list of names."""
    parts = module_name(path).split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def imports_of(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_functions = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
    }
    statements = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    for node in sorted(statements, key=lambda node: (node.lineno, node.col_offset)):
        local = id(node) in in_functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, (), local)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package(path)
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = tuple(alias.name for alias in node.names)
            submodules = (
                [n for n in names if is_module(f"{module}.{n}")] if module.split(".")[0] == ROOT else []
            )
            # `from aime_rl.utils import metrics` imports the module aime_rl.utils.metrics
            for name in submodules:
                yield Import(path, node.lineno, f"{module}.{name}", (), local)
            others = tuple(n for n in names if n not in submodules)
            if others or not names:
                yield Import(path, node.lineno, module, others, local)


def all_imports() -> list[Import]:
    return [i for path in sorted(PACKAGE_DIR.rglob("*.py")) for i in imports_of(path)]


def is_internal(item: Import) -> bool:
    return item.module.split(".")[0] == ROOT


def report(offenders: list[str], rule: str) -> str:
    return f"{len(offenders)} import(s) break the rule: {rule}\n  " + "\n  ".join(offenders)


def test_function_local_imports_are_only_for_optional_packages():
    offenders = []
    for item in all_imports():
        if not item.local:
            continue
        top = item.module.split(".")[0]
        if is_internal(item):
            offenders.append(f"{item.where()}: {item.module} (aime_rl module imported inside a function)")
        elif top not in LOCAL_IMPORTS_ALLOWED:
            offenders.append(
                f"{item.where()}: {item.module} (not an allowed optional package: import at the top)"
            )
    assert not offenders, report(
        offenders, "function-local imports are for optional third-party packages only"
    )


def test_modules_import_only_from_their_own_or_a_lower_layer():
    offenders = [
        f"SAME_LAYER_ALLOWED[{pair}]: {pair[0]} and {pair[1]} are not in the same layer"
        for pair in SAME_LAYER_ALLOWED
        if {LAYERS.get(pair[0]), LAYERS.get(pair[1])} != {LAYERS.get(pair[0])}
    ]
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = layer_of(module_name(path))
        if source not in LAYERS:
            offenders.append(
                f"{path.relative_to(PACKAGE_DIR.parent)}:1: package {source!r} has no layer in LAYERS"
            )
            continue
        for item in imports_of(path):
            if not is_internal(item):
                continue
            target = layer_of(item.module)
            if target == source:
                continue
            if target not in LAYERS:
                offenders.append(f"{item.where()}: {item.module} (package {target!r} has no layer in LAYERS)")
            elif LAYERS[target] > LAYERS[source]:
                offenders.append(
                    f"{item.where()}: {source} (layer {LAYERS[source]}) imports {item.module} "
                    f"(layer {LAYERS[target]})"
                )
            elif LAYERS[target] == LAYERS[source] and (source, target) not in SAME_LAYER_ALLOWED:
                offenders.append(
                    f"{item.where()}: {source} imports {item.module} of the same layer "
                    "(not in SAME_LAYER_ALLOWED)"
                )
    assert not offenders, report(offenders, "a module imports only from its own or a lower layer")


def test_no_private_name_is_imported_from_another_package():
    offenders = []
    for item in all_imports():
        if not is_internal(item) or layer_of(item.module) == layer_of(module_name(item.path)):
            continue
        private = [p for p in item.module.split(".") if p.startswith("_") and not p.startswith("__")]
        private += [n for n in item.names if n.startswith("_") and not n.startswith("__")]
        if private:
            offenders.append(f"{item.where()}: {', '.join(private)} from {item.module}")
    assert not offenders, report(offenders, "no private name (_x) is imported from another aime_rl package")
