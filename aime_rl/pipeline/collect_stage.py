"""The ``collect`` stage: top the run's replay up to ``collect_steps`` env steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..replay import ReplayStore, VecRecordFrames
from .config import RunConfig
from .environment import make_venv
from .progress import Progress
from .rundir import RunDir, replay_fingerprint
from .stage_common import open_replay_dir, say

COLLECT_SESSION_SEED_STRIDE = 100_003  # each collect session (a top-up) gets env seeds no earlier one used


def collect(config: RunConfig, run: RunDir, policy: Any = None, progress: bool = True) -> dict[str, Any]:
    """Top the replay up to ``collect_steps`` env steps with a random policy (or an SB3 ``policy``, which sees the
    env's frames, uint8 ``[num_envs, H, W, 3]``, rendered ones included).

    Each session (the first, or a rerun after a kill or with a larger target) uses env seeds that no earlier
    session used, so a rerun never records an episode twice.
    """
    manifest = run.manifest("collect") or {"sessions": 0}
    replay_dir = run.path / "replay"
    have = open_for_collecting(run, replay_dir)
    done = manifest.get("status") == "done"
    recorded = manifest.get("replay", {}).get("steps", 0) if done else 0
    if have < recorded:
        say(
            f"collect: the replay has {have} steps, {recorded} when collect last finished (files were removed)"
        )
    if (
        have >= config.collect_steps
        or have >= recorded
        and done
        and manifest.get("target") == config.collect_steps
    ):
        if (
            not done or have < recorded
        ):  # a stopped collect that reached the target, or a replay that lost files
            manifest = finished_manifest(config, replay_dir, int(manifest["sessions"]))
            run.write_manifest("collect", manifest)
        say(
            f"collect: the replay already has {have} steps (target {config.collect_steps}); "
            f"--collect-steps N to collect more, --restart to collect again"
        )
        return manifest
    session = int(manifest["sessions"])
    seed = config.seed + COLLECT_SESSION_SEED_STRIDE * session
    run.write_manifest(
        "collect", {**manifest, "status": "running", "sessions": session + 1, "target": config.collect_steps}
    )
    venv = make_venv(config, config.num_envs, seed)  # observes frames, rendered ones included
    size = (*config.frame_shape, 3)
    # Episode keys follow (seed, session): the held-out split (a hash of the key) is the same in every rerun.
    store = ReplayStore(replay_dir, frame_shape=size, writer_token=f"s{config.seed}_c{session}")
    recorder = VecRecordFrames(venv, store, frame_source="observation")
    obs = recorder.reset()
    venv.action_space.seed(seed)
    steps = -(
        -(config.collect_steps - have) // config.num_envs
    )  # whole vector steps, up to the target or past it
    bar = Progress(steps * config.num_envs, "collect", enabled=progress)
    for _ in range(steps):
        if policy is None:
            actions = np.stack([venv.action_space.sample() for _ in range(config.num_envs)])
        else:
            actions, _ = policy.predict(obs, deterministic=False)
        obs, _, _, _ = recorder.step(actions)
        bar.update(config.num_envs)
    bar.close()
    recorder.close()
    manifest = finished_manifest(config, replay_dir, session + 1)
    run.write_manifest("collect", manifest)
    say(
        f"collect: {manifest['replay']['steps']} steps in {plural(manifest['replay']['episodes'], 'episode')} → {replay_dir}"
    )
    return manifest


def plural(count: int, noun: str) -> str:
    """``1 episode``, ``2 episodes``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def open_for_collecting(run: RunDir, replay_dir: Path) -> int:
    """The steps the replay holds (0 when there is none), after deleting what a stopped collect left half-written
    (the run's lock keeps every other writer out)."""
    if not replay_dir.exists():
        return 0
    store = open_replay_dir(run)
    removed = store.remove_orphans()
    if removed:
        say(f"collect: removed {len(removed)} unfinished files a stopped collect left in the replay")
    return int(store.num_steps)


def finished_manifest(config: RunConfig, replay_dir: Path, sessions: int) -> dict[str, Any]:
    """The manifest of a collect that reached its target, with the replay's fingerprint."""
    return {
        "status": "done",
        "sessions": sessions,
        "target": config.collect_steps,
        "inputs": {"env": config.env, "frame_size": config.frame_size, "frame_height": config.frame_height},
        "replay": replay_fingerprint(ReplayStore.open(replay_dir)),
    }
