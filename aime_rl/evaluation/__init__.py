"""State probes: what does a representation know about the true state? (AtariARI protocol, any Gymnasium env.)

Anand et al. 2019, "Unsupervised State Representation Learning in Atari": collect frames with a random policy,
label each with the true state (Atari RAM bytes at annotated addresses; Catch's ball and paddle), split 70/10/20
by episode, drop test frames seen in training and near-constant variables, fit one linear probe per variable on
frozen features, and report weighted F1 (R² for continuous variables) averaged per category, then across
categories.

- :mod:`.labels`: :func:`collect_labelled` → :class:`LabelledFrames`; :func:`catch_labels`,
  :func:`catch_landing_labels`, :func:`cartpole_labels`, :func:`atari_ram_labels`.
- :mod:`.atari_ram`: the RAM annotation table (data) and the paper's categories.
- :mod:`.representations`: frames → features (the streamed context, VRNN beliefs, baselines).
- :mod:`.labelled_frames`: :class:`LabelledFrames` and :class:`VariableInfo`, the data the probes read.
- :mod:`.probes`: the protocol (:func:`probe_representations`), built on :mod:`.config` (:class:`ProbeConfig`),
  :mod:`.metrics` (weighted F1, R²), :mod:`.split` (the episode split) and :mod:`.fitting` (the linear probes).
- :mod:`.report`: :class:`ProbeReport` → JSON, markdown, TensorBoard, with the paper's reference numbers.
- :func:`probe_model`: all of it for one model and one env (``aime-rl probe`` calls it).
"""

from .atari_ram import CATEGORIES, RAM_ANNOTATIONS, expand_ram_variables, game_name, paper_categories
from .labels import (
    LabelledFrames,
    RamLabels,
    VariableInfo,
    atari_ram_labels,
    cartpole_labels,
    catch_labels,
    catch_landing_labels,
    collect_labelled,
    frame_hashes,
)
from .probe_run import DEFAULT_REPRESENTATIONS, default_label_fn, probe_model
from .probes import (
    LinearProbes,
    ProbeConfig,
    Split,
    entropy_nats,
    fit_linear_probes,
    fit_ridge,
    probe_features,
    probe_representations,
    r2_score,
    remove_test_duplicates,
    select_variables,
    split_by_episode,
    standardise,
    weighted_f1,
)
from .report import PAPER_REFERENCE, ProbeReport, RepresentationResult, VariableResult, category_scores
from .representations import (
    REPRESENTATIONS,
    NatureCNN,
    compute_representations,
    frame_stack_features,
    pixel_features,
    random_cnn_features,
    stream_features,
    untrained_copy,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_REPRESENTATIONS",
    "PAPER_REFERENCE",
    "RAM_ANNOTATIONS",
    "REPRESENTATIONS",
    "LabelledFrames",
    "LinearProbes",
    "NatureCNN",
    "ProbeConfig",
    "ProbeReport",
    "RamLabels",
    "RepresentationResult",
    "Split",
    "VariableInfo",
    "VariableResult",
    "atari_ram_labels",
    "cartpole_labels",
    "catch_labels",
    "catch_landing_labels",
    "category_scores",
    "collect_labelled",
    "compute_representations",
    "default_label_fn",
    "entropy_nats",
    "expand_ram_variables",
    "fit_linear_probes",
    "fit_ridge",
    "frame_hashes",
    "frame_stack_features",
    "game_name",
    "paper_categories",
    "pixel_features",
    "probe_features",
    "probe_model",
    "probe_representations",
    "r2_score",
    "random_cnn_features",
    "remove_test_duplicates",
    "select_variables",
    "split_by_episode",
    "standardise",
    "stream_features",
    "untrained_copy",
    "weighted_f1",
]
