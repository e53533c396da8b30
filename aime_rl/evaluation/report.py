"""Probe results: per variable, per category, per representation → JSON, a markdown table, TensorBoard scalars.

Reference numbers (:data:`PAPER_REFERENCE`) are AtariARI's Table 2 (Anand et al. 2019): linear probes on
random-agent frames, weighted F1 averaged across categories, for Pong and the mean over their 22 games. Their
encoders see one full-size 210×160 frame; ours see the model's resized frames (64×64), so the comparison is
indicative, not exact.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from .atari_ram import CATEGORIES

__all__ = [
    "PAPER_METHODS",
    "PAPER_REFERENCE",
    "REPRESENTATION_TO_PAPER",
    "ProbeReport",
    "RepresentationResult",
    "VariableResult",
    "category_scores",
]

#: Column order of AtariARI's Table 2.
PAPER_METHODS = ("MAJ-CLF", "RANDOM-CNN", "VAE", "PIXEL-PRED", "CPC", "ST-DIM", "SUPERVISED")
#: AtariARI Table 2 (F1 averaged across categories): Pong, and the mean over the 22 games.
PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "pong": dict(zip(PAPER_METHODS, (0.10, 0.17, 0.09, 0.70, 0.71, 0.81, 0.87), strict=True)),
    "mean (22 games)": dict(zip(PAPER_METHODS, (0.14, 0.44, 0.40, 0.58, 0.61, 0.68, 0.82), strict=True)),
}
#: Our baselines that correspond to a paper column.
REPRESENTATION_TO_PAPER = {"majority": "MAJ-CLF", "random_cnn": "RANDOM-CNN"}


def category_scores(scores: Mapping[str, float], categories: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Mean score of each category's variables; the paper's categories first (in their order), then any other.

    A variable counts in every category it has; variables without a category count in none.
    """
    members: dict[str, list[float]] = {}
    for name, score in scores.items():
        for category in categories[name]:
            members.setdefault(category, []).append(float(score))
    order = [c for c in CATEGORIES if c in members] + [c for c in members if c not in CATEGORIES]
    return {c: float(sum(members[c]) / len(members[c])) for c in order}


@dataclass
class VariableResult:
    """One variable's probe: ``metric`` is ``"f1"`` (weighted F1, discrete) or ``"r2"`` (continuous), on the test
    split. ``details``: the kept epoch (classifiers), the chosen ridge ``alpha``, or the majority prediction."""

    name: str
    kind: str
    metric: str
    score: float
    categories: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RepresentationResult:
    """One representation: ``score`` = mean over categories of the mean score of their variables (the paper's
    per-game number; the plain mean over variables when no variable has a category); ``mean_score`` = mean over
    variables; ``dim`` = feature size (0 for the majority baseline)."""

    name: str
    dim: int
    variables: dict[str, VariableResult]
    category_scores: dict[str, float]
    score: float
    mean_score: float


@dataclass
class ProbeReport:
    """Everything one probing run measured (:func:`aime_rl.evaluation.probe_representations` builds it).

    Attributes:
        representations: name → result, in the order they were probed.
        variables: the probed variables → ``{"kind", "categories", "num_classes", "entropy"}``.
        dropped: variables left out → why (entropy below the threshold, constant).
        split: frames and episodes per split, test duplicates removed.
        env_id, game: the env and its AtariARI game key (None when not an annotated Atari game).
        num_frames, num_episodes, config, metadata: the data and settings.
    """

    representations: dict[str, RepresentationResult]
    variables: dict[str, dict[str, Any]]
    dropped: dict[str, str]
    split: dict[str, int]
    env_id: str | None = None
    game: str | None = None
    num_frames: int = 0
    num_episodes: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- access ------------------------------------------------------------------------------------------------

    def scores(self) -> dict[str, float]:
        """Representation → its overall score."""
        return {name: r.score for name, r in self.representations.items()}

    def score(self, representation: str, variable: str | None = None) -> float:
        """The overall score of ``representation``, or its score on ``variable``."""
        result = self.representations[representation]
        return result.score if variable is None else result.variables[variable].score

    def reference(self) -> dict[str, dict[str, float]]:
        """The paper's rows to show beside this report: the game's (when it has one) and the 22-game mean."""
        rows = {}
        if self.game in PAPER_REFERENCE:
            rows[self.game] = PAPER_REFERENCE[self.game]
        if self.game is not None:
            rows["mean (22 games)"] = PAPER_REFERENCE["mean (22 games)"]
        return rows

    # -- JSON ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reference"] = self.reference()
        return _finite(data)

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The report as JSON (NaN written as null); also written to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            tmp = f"{os.fspath(path)}.tmp"
            with open(tmp, "w") as file:
                file.write(text + "\n")
            os.replace(tmp, path)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeReport:
        representations = {}
        for name, rep in data["representations"].items():
            variables = {
                v: VariableResult(**{**r, "categories": tuple(r["categories"]), "score": _nan(r["score"])})
                for v, r in rep["variables"].items()
            }
            representations[name] = RepresentationResult(
                name=rep["name"],
                dim=rep["dim"],
                variables=variables,
                category_scores={k: _nan(v) for k, v in rep["category_scores"].items()},
                score=_nan(rep["score"]),
                mean_score=_nan(rep["mean_score"]),
            )
        fields = {k: v for k, v in data.items() if k not in ("representations", "reference")}
        return cls(representations=representations, **fields)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> ProbeReport:
        """Read :meth:`to_json`'s output (a JSON string or a file path)."""
        text = os.fspath(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text) as file:
                text = file.read()
        return cls.from_dict(json.loads(text))

    # -- markdown ------------------------------------------------------------------------------------------------

    def to_markdown(self, reference: bool = True, per_variable: bool = True) -> str:
        """A summary table (score and category scores per representation, the paper's rows beneath), then a
        per-variable table (metric per column: F1 for discrete variables, R² for continuous ones)."""
        lines = [self._title(), ""]
        categories = list(dict.fromkeys(c for r in self.representations.values() for c in r.category_scores))
        header = ["representation", "dim", "score", *categories, "mean over variables"]
        lines += [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
        for name, r in self.representations.items():
            paper = REPRESENTATION_TO_PAPER.get(name)
            label = f"{name} ({paper})" if paper else name
            cells = [label, str(r.dim), _fmt(r.score), *(_fmt(r.category_scores.get(c)) for c in categories)]
            lines.append(_row([*cells, _fmt(r.mean_score)]))
        if reference and self.reference():
            lines += [
                "",
                "AtariARI Table 2 (their encoders see one full 210×160 frame; F1 averaged across categories):",
                "",
            ]
            lines += [_row(["paper", *PAPER_METHODS]), _row(["---"] + ["---:"] * len(PAPER_METHODS))]
            for row, values in self.reference().items():
                lines.append(_row([row, *(_fmt(values[m]) for m in PAPER_METHODS)]))
        if per_variable:
            names = list(self.variables)
            metrics = [("F1" if self.variables[v]["kind"] == "discrete" else "R²") for v in names]
            lines += [
                "",
                _row(["representation", *(f"{v} ({m})" for v, m in zip(names, metrics, strict=True))]),
            ]
            lines.append(_row(["---"] + ["---:"] * len(names)))
            for name, r in self.representations.items():
                lines.append(_row([name, *(_fmt(r.variables[v].score) for v in names)]))
        if self.dropped:
            lines += ["", "Not probed: " + "; ".join(f"{v} ({why})" for v, why in self.dropped.items())]
        return "\n".join(lines) + "\n"

    def _title(self) -> str:
        s = self.split
        return (
            f"State probes on {self.env_id or 'an unnamed env'}: {self.num_frames} frames, {self.num_episodes} "
            f"episodes (train/val/test episodes {s.get('train_episodes')}/{s.get('val_episodes')}/"
            f"{s.get('test_episodes')}, test frames {s.get('test_frames')} after removing "
            f"{s.get('test_duplicates_removed')} seen in train/val)"
        )

    # -- TensorBoard ---------------------------------------------------------------------------------------------

    def log_tensorboard(self, writer_or_logdir: Any, step: int = 0) -> None:
        """Scalars ``probe/<representation>/<variable>``, ``probe_score/<representation>`` and
        ``probe_category/<representation>/<category>``, plus the markdown as text ``probe/report``.

        ``writer_or_logdir``: a ``SummaryWriter`` (left open) or a directory (a writer is opened and closed).
        """
        own = not hasattr(writer_or_logdir, "add_scalar")
        writer = SummaryWriter(os.fspath(writer_or_logdir)) if own else writer_or_logdir
        try:
            for name, r in self.representations.items():
                for variable, result in r.variables.items():
                    writer.add_scalar(f"probe/{name}/{variable}", result.score, step)
                writer.add_scalar(f"probe_score/{name}", r.score, step)
                for category, value in r.category_scores.items():
                    writer.add_scalar(f"probe_category/{name}/{category}", value, step)
            writer.add_text("probe/report", self.to_markdown(), step)
            writer.flush()
        finally:
            if own:
                writer.close()


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _finite(obj: Any) -> Any:
    """NaN/inf → None, tuples → lists (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
