"""A run directory and what each stage owns in it.

::

    runs/<name>/
      config.json                 the run's settings: written by the first stage, read by every later one
      stages/<stage>.json         each stage's manifest: status, steps, settings, input fingerprints, metrics
      replay/                     collect
      tokenizer/                  train-tokenizer: TensorBoard, checkpoints/, decoder/ (the decoder's own steps),
                                  model/ (the trained tokenizer)
      context_model/ model/       train-context: TensorBoard + checkpoints; the whole CausalPerceiverIO
      world_model/                train-world-model
      agent/                      train-agent: agent.zip, agent.json, observation statistics, TensorBoard
      report.json, report.md      evaluate
      probe.json, probe.md        probe (probe/: its TensorBoard scalars)

A stage writes only its own outputs. Its manifest records fingerprints of what it was made from (the replay's
size, the SHA-256 of upstream weights), so a later run of the stage can tell when its inputs changed.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..perception.presets import get_preset
from ..utils.io import atomic_write_json, read_json, read_safetensors, verify_module_manifest
from .config import KWARG_SETTINGS, SHAPING, STAGES, RunConfig, flag_setting, layer

STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "collect": ("replay",),
    "tokenizer": ("tokenizer",),
    "context": ("context_model", "model"),
    "world_model": ("world_model",),
    "agent": ("agent",),
    "evaluate": ("report.json", "report.md"),
    "probe": ("probe.json", "probe.md", "probe"),
}
#: the file each training stage's later readers need: a finished stage without it is a damaged run
STAGE_FILES: dict[str, str] = {
    "tokenizer": "tokenizer/model/model.safetensors",
    "context": "model/model.safetensors",
    "world_model": "world_model/world_model/model.safetensors",
    "agent": "agent/agent.zip",
}
#: where ``--restart`` keeps the outputs it discards until the command has succeeded (see :meth:`RunDir.set_aside`)
ASIDE = ".discarded"
STAGE_COMMANDS = {
    "collect": "collect",
    "tokenizer": "train-tokenizer",
    "context": "train-context",
    "world_model": "train-world-model",
    "agent": "train-agent",
    "evaluate": "evaluate",
    "probe": "probe",
}


def downstream(stage: str) -> list[str]:
    """``stage`` and the stages whose outputs are made from it, in pipeline order."""
    if (
        stage == "world_model"
    ):  # an agent depends on it only when trained in imagination; the probe's belief does
        return ["world_model", "probe"]
    if stage in ("evaluate", "probe"):  # two measurements, each of what came before, not of each other
        return [stage]
    if stage == "agent":  # the probe reads the context model, not the agent
        return ["agent", "evaluate"]
    return list(STAGES[STAGES.index(stage) :])


def shaped_stages(key: str) -> list[str]:
    """The stages whose outputs a change of the data-shaping setting ``key`` (:data:`SHAPING`) makes stale."""
    first = SHAPING[key]
    if first == "collect":  # env and frame size shape every model too
        return list(STAGES)
    stale = downstream(first)
    if key == "window":  # the probe reads the context through the same window as the agent
        stale = [s for s in STAGES if s in stale or s == "probe"]
    return stale


@dataclass
class RunDir:
    """The directory of one run (``config.run_dir``) and its manifests."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def manifest_path(self, stage: str) -> Path:
        return self.path / "stages" / f"{stage}.json"

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's manifest, or ``None`` when the stage has not run."""
        path = self.manifest_path(stage)
        return read_json(path) if path.is_file() else None

    def write_manifest(self, stage: str, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path(stage), {"stage": stage, "updated": time.time(), **manifest})

    def command_line(self, command: str) -> str:
        """``aime-rl <command> --name <name>``, with ``--runs-dir`` when the run is not under the default ``runs``."""
        runs_dir = (
            "" if self.path.parent == Path("runs") else f" --runs-dir {shlex.quote(str(self.path.parent))}"
        )
        return f"aime-rl {command} --name {self.path.name}{runs_dir}"

    def check_outputs(self, stage: str) -> None:
        """``ValueError`` naming the command that rebuilds it when a stage's file (:data:`STAGE_FILES`) is missing,
        is a saved model whose weights fail the checksum of its ``manifest.json``, or is an agent's zip archive that
        does not open or fails its members' CRCs."""
        name = STAGE_FILES.get(stage)
        if name is None:
            return
        again = f"`{self.command_line(STAGE_COMMANDS[stage])} --restart` makes it again"
        path = self.path / name
        if not path.is_file():
            raise ValueError(
                f"run {self.path.name!r} lacks {name}, which {STAGE_COMMANDS[stage]} made: {again}"
            )
        if path.suffix == ".safetensors":
            try:
                verify_module_manifest(path.parent)
            except ValueError as err:
                raise ValueError(f"{err}: {again}") from err
        elif path.suffix == ".zip":
            # a damaged archive fails in many ways: BadZipFile, EOFError, zlib.error, NotImplementedError, ...
            try:
                with zipfile.ZipFile(path) as archive:
                    damaged = archive.testzip()
            except Exception as err:
                damaged = f"{type(err).__name__}: {err}"
            if damaged is not None:
                raise ValueError(f"run {self.path.name!r} has a damaged {name} ({damaged}): {again}")

    def has_outputs(self, stage: str) -> bool:
        return self.manifest_path(stage).exists() or any(
            (self.path / o).exists() for o in STAGE_OUTPUTS[stage]
        )

    def discard(self, stages: list[str]) -> list[str]:
        """Remove the outputs and manifests of ``stages``; returns the stages that had any."""
        removed = self.set_aside(stages)
        self.drop_aside()
        return removed

    def set_aside(self, stages: list[str]) -> list[str]:
        """Move the outputs and manifests of ``stages`` into ``<run>/.discarded`` (renames: nothing is copied), where
        :meth:`restore_aside` brings them back and :meth:`drop_aside` deletes them; returns the stages that had
        any. What an earlier, killed command left there is deleted first."""
        self.drop_aside()
        moved = []
        try:
            for stage in stages:
                if not self.has_outputs(stage):
                    continue
                for name in (*STAGE_OUTPUTS[stage], f"stages/{stage}.json"):
                    if (self.path / name).exists():
                        target = self.path / ASIDE / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        (self.path / name).rename(target)
                moved.append(stage)
        except BaseException:
            self.restore_aside(moved)  # all or nothing
            raise
        return moved

    def restore_aside(self, stages: list[str]) -> None:
        """Put what :meth:`set_aside` moved back in place, after removing whatever a failed command wrote for
        ``stages`` (those it set aside, and later ones it had begun to make) since."""
        aside = self.path / ASIDE
        if not aside.is_dir():
            return
        for stage in stages:
            for name in (*STAGE_OUTPUTS[stage], f"stages/{stage}.json"):
                current = self.path / name
                if current.is_dir():
                    shutil.rmtree(current)
                elif current.exists():
                    current.unlink()
        manifests = aside / "stages"
        items = [p for p in aside.iterdir() if p != manifests]
        items += list(manifests.iterdir()) if manifests.is_dir() else []
        for item in items:
            current = self.path / item.relative_to(aside)
            current.parent.mkdir(parents=True, exist_ok=True)
            item.rename(current)
        self.drop_aside()

    def drop_aside(self) -> None:
        shutil.rmtree(self.path / ASIDE, ignore_errors=True)

    def stored_config(self) -> RunConfig | None:
        """The run's ``config.json`` (validated), or ``None`` for a new run."""
        if not self.config_path.exists():
            return None
        try:
            values = read_json(self.config_path)
            return RunConfig.from_dict(values, str(self.config_path), complete=True)
        except ValueError as err:
            where = "" if str(self.config_path) in str(err) else f"{self.config_path}: "
            raise ValueError(f"{where}{err} (fix the file, or start a new run with another --name)") from err


def same_setting(key: str, value: Any, stored: Any, preset: str) -> bool:
    """Whether ``value`` asks for what the run was made with: equal, or — a ``predictor_kwargs`` table — a table whose
    keys missing on one side hold the preset's own value there (an Atari recipe's ``embeddings_from_codes=false``
    against a run made before the recipe named it)."""
    if value == stored:
        return True
    if key != "predictor_kwargs":
        return False
    own = get_preset(preset).predictor
    return all(
        value.get(k, getattr(own, k, None)) == stored.get(k, getattr(own, k, None)) for k in {*value, *stored}
    )


def changed_keys(table: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The keys of a merged keyword table that differ from the run's own: what a suggested command must give, since
    the rest is kept key by key."""
    return {k: v for k, v in table.items() if k not in stored or stored[k] != v}


def reconcile(
    stored: RunConfig, explicit: dict[str, Any], run: RunDir, stage: str, restart: bool
) -> tuple[RunConfig, list[str]]:
    """The run's config with the user's explicit settings laid on top, and the stages ``--restart`` discards.

    A change of a data-shaping setting (:data:`SHAPING`) is refused while outputs made with the old value exist,
    unless ``restart`` and the setting shapes ``stage`` or a later one (then this stage and its downstream are
    discarded and redone). A setting that shapes an earlier stage must be changed by restarting that stage. The
    keyword tables (``--predictor-kwarg``, ``--agent-kwarg``) are laid over the stored ones key by key, as they are
    when a run is made: one new key does not drop the run's others (the Atari recipe's
    ``motion_attention_bias=0``).
    """
    values = stored.to_dict()
    if "algo" in explicit and explicit["algo"] != values["algo"]:
        values["agent_kwargs"] = {}  # the run's agent settings were another algorithm's (see layer)
    explicit = {key: layer(values, {key: value})[key] for key, value in explicit.items()}
    # a bad value is named as such before it can be called a contradiction
    RunConfig.from_dict({**values, **explicit}, "the settings")
    discard = downstream(stage) if restart else []
    for key, value in explicit.items():
        if key not in SHAPING or same_setting(key, value, values[key], stored.preset):
            continue
        first = SHAPING[key]
        affected = [s for s in shaped_stages(key) if run.has_outputs(s)]
        if affected and not (restart and STAGES.index(first) >= STAGES.index(stage)):
            given = flag_setting(key, changed_keys(value, values[key]) if key in KWARG_SETTINGS else value)
            raise ValueError(
                f"run {run.path.name!r} was made with {key}={values[key]!r}; {given} contradicts "
                f"it ({', '.join(STAGE_COMMANDS[s] for s in affected)} used it). Start a new --name, or run "
                f"{STAGE_COMMANDS[first]} --restart {given} to redo it and everything after it"
            )
        if restart:
            discard = [s for s in STAGES if s in discard or s in shaped_stages(key)]
    for key, value in explicit.items():
        values[key] = value
    return RunConfig.from_dict(values, "the settings"), discard


# -- fingerprints ---------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(directory: Path) -> str:
    """SHA-256 of a saved model's weights (``model.safetensors``)."""
    return file_sha256(directory / "model.safetensors")


def codes_fingerprint(directory: Path) -> str:
    """SHA-256 of a saved tokenizer's weights outside its decoder (``model.safetensors``): what decides the tokens.
    Training the decoder alone (``decoder_steps``) leaves it unchanged."""
    digest = hashlib.sha256()
    for name, tensor in sorted(read_safetensors(directory / "model.safetensors").items()):
        if not name.startswith("decoder."):
            digest.update(name.encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def replay_fingerprint(store) -> dict[str, int]:
    """The replay store's size; the store is append-only, so a change of size is a change of content."""
    return {"episodes": len(store), "steps": int(store.num_steps)}
