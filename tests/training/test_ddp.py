"""DDP on CPU: two gloo processes launched by torchrun train like one process on the global batch.

The worker script below runs under ``torchrun --nproc_per_node=2`` and, for reference, as a plain single process.
Each rank gets its half of the same deterministic global batch; DDP averages the gradients, so after a few steps
every rank must hold the single-process parameters, and the mean of the ranks' losses must be the single-process
loss. A tiny VQ tokenizer then checks that its EMA codebook buffers (all-reduced inside the quantizer, with
``broadcast_buffers=False``) stay identical on both ranks.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import run_worker, torchrun

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    from aime_rl.data import moving_sprites
    from aime_rl.perception import VQPTTokenizer
    from aime_rl.training import Trainer, TrainerConfig, cleanup, init_distributed

    GLOBAL_BATCH = 8
    out = Path(sys.argv[1])
    rank, world_size, _ = init_distributed()
    per_rank = GLOBAL_BATCH // world_size
    name = f"world{world_size}_rank{rank}"


    def regression_batches(seed, rank, start_step):
        # the global batch of step s depends only on s; rank r takes rows [r * per_rank, (r + 1) * per_rank)
        step = start_step
        while True:
            g = torch.Generator().manual_seed(1000 + step)
            x, y = torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 1, generator=g)
            rows = slice(rank * per_rank, (rank + 1) * per_rank)
            yield {"x": x[rows], "y": y[rows]}
            step += 1


    losses = []


    def regression_loss(model, batch):
        total = (model(batch["x"]) - batch["y"]).pow(2).mean()
        losses.append(total.item())
        return {"total": total}


    config = TrainerConfig(
        steps=3, batch_size=per_rank, sequence_length=1, lr=1e-2, warmup_steps=0, weight_decay=0.0,
        grad_clip=None, log_every=1, checkpoint_every=0,
    )
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    mlp = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    if world_size == 1:
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    trainer = Trainer(mlp, regression_loss, config, out / f"mlp_world{world_size}", regression_batches, progress=False)
    trainer.fit()
    torch.save({"params": trainer.model.state_dict(), "losses": losses}, out / f"mlp_{name}.pt")

    if world_size > 1:
        def video_batches(seed, rank, start_step):
            step = start_step
            while True:
                g = torch.Generator().manual_seed(seed * 1000 + rank * 100 + step)
                yield {"frames": (moving_sprites(1, 2, 16, generator=g) * 255).to(torch.uint8)}
                step += 1

        torch.manual_seed(0)
        tokenizer = VQPTTokenizer(code_dim=16, num_codes=8, base_channels=8, num_quantizers=2, perceptual_weight=0.0)
        vq_config = TrainerConfig(steps=2, batch_size=1, sequence_length=2, warmup_steps=0, checkpoint_every=0)
        vq_trainer = Trainer(
            tokenizer, lambda m, b: m(b["frames"]), vq_config, out / "vq", video_batches, progress=False
        )
        vq_trainer.fit()
        torch.save(vq_trainer.model.state_dict(), out / f"vq_{name}.pt")
    cleanup()
    """
)


@pytest.fixture(scope="module")
def ddp_outputs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    run_worker([*torchrun(2), str(script), str(out)])
    run_worker([sys.executable, str(script), str(out)])
    return out


def test_ranks_match_a_single_process_on_the_global_batch(ddp_outputs):
    rank0 = torch.load(ddp_outputs / "mlp_world2_rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_outputs / "mlp_world2_rank1.pt", weights_only=True)
    single = torch.load(ddp_outputs / "mlp_world1_rank0.pt", weights_only=True)
    for name, tensor in rank0["params"].items():
        assert torch.equal(tensor, rank1["params"][name]), name
        torch.testing.assert_close(tensor, single["params"][name], atol=1e-6, rtol=0)
    # each rank's loss is the mean over its half; their average is the loss over the global batch
    mean_of_ranks = torch.tensor([rank0["losses"], rank1["losses"]]).mean(0)
    torch.testing.assert_close(mean_of_ranks, torch.tensor(single["losses"]), atol=1e-6, rtol=0)
    assert len(single["losses"]) == 3


def test_vq_buffers_stay_in_sync_without_broadcast(ddp_outputs):
    rank0 = torch.load(ddp_outputs / "vq_world2_rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_outputs / "vq_world2_rank1.pt", weights_only=True)
    assert any("embed" in name for name in rank0)
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name


def test_only_rank_zero_writes_logs_and_checkpoints(ddp_outputs):
    run = ddp_outputs / "mlp_world2"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")] == [
        "step_00000003"
    ]
