"""World-model training (``train_world_model``): exact resume, checkpoint files, DDP on two CPU processes.

Every run loads the frozen perceiver from disk, as ``aime-rl train-world-model`` does in a new process, and trains
a small VRNN on a replay store of random-policy Catch episodes. The DDP runs go through ``torchrun`` with gloo
(the helpers of ``tests/training/test_ddp.py``, in ``tests/helpers.py``) and are compared with one process on the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from aime_rl.perception import CausalPerceiverIO
from aime_rl.training import CheckpointManager, TrainerConfig
from aime_rl.world_model import training
from aime_rl.world_model.training import train_world_model, world_model_loss
from aime_rl.world_model.vrnn import VRNN
from tests.helpers import SMALL, collect_catch, run_worker, torchrun

VRNN_KWARGS = dict(SMALL, action_dim=3)  # Catch: left, stay, right
STEPS, STOP = 6, 3  # the resume test stops after STOP of STEPS steps


def make_config(**overrides) -> TrainerConfig:
    settings = dict(
        steps=STEPS,
        batch_size=2,
        sequence_length=4,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        eval_every=2,  # open-loop evals between checkpoints draw from the RNG too
        checkpoint_every=STOP,
        holdout_fraction=0.25,
    )
    return TrainerConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return collect_catch(tmp_path_factory.mktemp("catch_replay"), episodes=6).directory


@pytest.fixture(scope="module")
def perceiver_dir(tmp_path_factory):
    """The tiny preset, saved like a trained one (untrained is fine: frozen, in eval mode, it never changes)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("perceiver")
    perceiver = CausalPerceiverIO.from_preset("tiny", video_shape=(8, 3, 64, 64), base_channels=8)
    perceiver.save_pretrained(directory)
    return directory


def train(logdir, store_dir, perceiver_dir, config: TrainerConfig | None = None) -> VRNN:
    perceiver = CausalPerceiverIO.from_pretrained(perceiver_dir).eval()
    return train_world_model(
        store_dir, perceiver, config or make_config(), logdir, VRNN_KWARGS, progress=False
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, store_dir, perceiver_dir) -> tuple:
    """``(logdir, vrnn)`` of a run of ``STEPS`` uninterrupted steps."""
    logdir = tmp_path_factory.mktemp("uninterrupted")
    return logdir, train(logdir, store_dir, perceiver_dir)


def record_steps(monkeypatch, interrupt_at: int | None = None) -> list[int]:
    """Count the steps (loss calls) of the next ``train`` calls; a KeyboardInterrupt in step ``interrupt_at``."""
    steps: list[int] = []

    def loss(model, batch):
        steps.append(len(steps) + 1)
        if steps[-1] == interrupt_at:
            raise KeyboardInterrupt
        return world_model_loss(model, batch)

    monkeypatch.setattr(training, "world_model_loss", loss)
    return steps


# ------------------------------------------------------------------------------------------------- resume


def test_resume_after_an_interruption_is_exact(tmp_path, monkeypatch, store_dir, perceiver_dir, finished_run):
    _, uninterrupted = finished_run
    record_steps(monkeypatch, interrupt_at=STOP + 1)  # killed during step STOP + 1 (a Ctrl-C)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, store_dir, perceiver_dir)
    assert CheckpointManager(tmp_path / "checkpoints").latest_path().name == f"step_{STOP:08d}"

    steps = record_steps(monkeypatch)
    resumed = train(tmp_path, store_dir, perceiver_dir)  # same call, as a restarted process would make it
    assert len(steps) == STEPS - STOP  # it continued from the checkpoint instead of starting over
    expected = uninterrupted.state_dict()
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# ------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_is_safetensors_and_json_without_pickled_code(finished_run):
    logdir, vrnn = finished_run
    checkpoint = CheckpointManager(logdir / "checkpoints").latest_path()
    assert checkpoint.name == f"step_{STEPS:08d}"
    names = sorted(path.name for path in checkpoint.iterdir())
    assert names == ["config.json", "manifest.json", "model.safetensors", "state.pt"]
    # the weights are the VRNN's (not the perceiver's) and the JSON config rebuilds it
    weights = load_file(checkpoint / "model.safetensors")
    assert weights.keys() == vrnn.state_dict().keys()
    for name, tensor in vrnn.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    model_config = json.loads((checkpoint / "config.json").read_text())["model"]
    assert model_config.pop("class") == "VRNN"
    assert VRNN(vrnn.perceiver, **model_config).config == vrnn.config
    # optimizer/scheduler/RNG state: tensors and plain containers only, loadable without unpickling code
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    assert state["step"] == STEPS and state["optimizer"]["state"]


def test_corrupted_checkpoint_raises_value_error_naming_the_file(
    tmp_path, store_dir, perceiver_dir, finished_run
):
    logdir = shutil.copytree(finished_run[0], tmp_path / "run")
    weights = CheckpointManager(logdir / "checkpoints").latest_path() / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the tensor data: still a readable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"corrupted checkpoint file {weights}"):
        train(logdir, store_dir, perceiver_dir)  # resumes from logdir/checkpoints first


# ------------------------------------------------------------------------------------------------- DDP

DDP_CONFIG = dict(steps=4, checkpoint_every=2, eval_every=0)  # evaluation only after the last step

WORKER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch

    from aime_rl.perception import CausalPerceiverIO
    from aime_rl.training import CheckpointManager, TrainerConfig, cleanup, init_distributed
    from aime_rl.world_model import training
    from aime_rl.world_model.vrnn import VRNN

    spec = json.loads(Path(sys.argv[1]).read_text())
    rank, world_size, _ = init_distributed()
    losses, writes = [], []


    def recording_loss(model, batch, loss=training.world_model_loss):
        out = loss(model, batch)
        losses.append(out["total"].item())
        return out


    def recording(method, what):
        def record(self, *args, **kwargs):
            writes.append(what(*args))
            return method(self, *args, **kwargs)
        return record


    training.world_model_loss = recording_loss
    CheckpointManager.save = recording(CheckpointManager.save, lambda step, *_: f"checkpoint {step}")
    VRNN.save_pretrained = recording(VRNN.save_pretrained, lambda *_: "final model")
    perceiver = CausalPerceiverIO.from_pretrained(spec["perceiver_dir"]).eval()
    vrnn = training.train_world_model(
        spec["store_dir"], perceiver, TrainerConfig(**spec["config"]), spec["logdir"], spec["vrnn_kwargs"],
        progress=False,
    )
    result = {"params": vrnn.state_dict(), "losses": losses, "writes": writes}
    torch.save(result, Path(spec["logdir"]) / f"rank{rank}_of_{world_size}.pt")
    cleanup()
    """
)


def one_process_on_the_global_batch(store_dir, perceiver_dir, config: TrainerConfig, logdir) -> dict:
    """The same ``train_world_model`` call in one process, on the global batch of both ranks.

    Rank r reads rows ``[r B, (r + 1) B)`` of each step's global batch of ``2 B`` windows
    (``ReplayWindowDataset``), so one process with ``batch_size = 2 B`` sees the same windows. The VRNN's noise
    comes from the torch RNG, which the Trainer seeds alike on every rank, so each rank draws its half's noise
    from the same RNG state. The loss here does the same: each half from that state, then their mean, whose
    gradient is the average DDP takes.
    """
    losses = []

    def loss_of_halves(model, batch):
        rng = torch.get_rng_state()
        totals = []
        for rows in torch.arange(2 * config.batch_size).chunk(2):
            torch.set_rng_state(rng)
            half = {key: value[rows] for key, value in batch.items()}
            totals.append(world_model_loss(model, half)["total"])
        total = torch.stack(totals).mean()
        losses.append(total.item())
        return {"total": total}

    global_config = dataclasses.replace(config, batch_size=2 * config.batch_size)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "world_model_loss", loss_of_halves)
        vrnn = train(logdir, store_dir, perceiver_dir, global_config)
    return {"params": vrnn.state_dict(), "losses": losses}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, store_dir, perceiver_dir) -> dict:
    out = tmp_path_factory.mktemp("wm_ddp")
    config = make_config(**DDP_CONFIG)
    spec = {
        "store_dir": str(store_dir),
        "perceiver_dir": str(perceiver_dir),
        "config": dataclasses.asdict(config),
        "logdir": str(out / "run"),
        "vrnn_kwargs": VRNN_KWARGS,
    }
    (out / "spec.json").write_text(json.dumps(spec))
    (out / "worker.py").write_text(WORKER)
    run_worker([*torchrun(2), str(out / "worker.py"), str(out / "spec.json")])
    ranks = [torch.load(out / "run" / f"rank{r}_of_2.pt", weights_only=True) for r in (0, 1)]
    reference = one_process_on_the_global_batch(store_dir, perceiver_dir, config, out / "reference")
    return {"logdir": out / "run", "ranks": ranks, "reference": reference}


def test_ddp_ranks_end_with_identical_parameters(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    assert len(rank0["losses"]) == len(rank1["losses"]) == DDP_CONFIG["steps"]  # they did train
    for name, tensor in rank0["params"].items():
        assert torch.equal(tensor, rank1["params"][name]), name


def test_ddp_matches_one_process_on_the_global_batch(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    reference = ddp_run["reference"]
    # Only float32 rounding differs (gloo sums the two halves' gradients, autograd here its own way): losses of
    # ~450 agree to ~1e-7 relative, weights to ~5e-7, while one Adam step moves a weight by up to lr = 3e-3.
    mean_of_ranks = torch.tensor([rank0["losses"], rank1["losses"]]).mean(0)
    torch.testing.assert_close(mean_of_ranks, torch.tensor(reference["losses"]), atol=0, rtol=1e-6)
    for name, tensor in rank0["params"].items():
        torch.testing.assert_close(tensor, reference["params"][name], atol=5e-6, rtol=0, msg=name)


def test_ddp_only_rank_zero_writes_checkpoints_the_model_and_logs(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    assert rank0["writes"] == ["checkpoint 2", "checkpoint 4", "final model"]
    assert rank1["writes"] == []
    logdir = ddp_run["logdir"]
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in CheckpointManager(logdir / "checkpoints").checkpoints()] == [
        "step_00000002",
        "step_00000004",
    ]


def test_a_resume_rebuilds_the_vrnn_its_checkpoint_holds(tmp_path, store_dir, perceiver_dir, finished_run):
    # e.g. a run trained before the VRNN's defaults changed: the resume is called without the old arguments
    logdir, _ = finished_run
    shutil.copytree(logdir / "checkpoints", tmp_path / "checkpoints")
    perceiver = CausalPerceiverIO.from_pretrained(perceiver_dir).eval()
    resumed = train_world_model(store_dir, perceiver, make_config(steps=STEPS + 1), tmp_path, progress=False)
    assert resumed.config == VRNN(perceiver, **VRNN_KWARGS).config != VRNN(perceiver, action_dim=3).config
